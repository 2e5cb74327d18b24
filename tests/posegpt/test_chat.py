"""The terminal chat: answers, and an .obj and a .png for every pose."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posegpt.chat import run_chat
from tests.fixtures.model import POSING_SAMPLES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]


def test_chat_writes_obj_and_png_per_pose(posing_checkpoint_dir: Path, tmp_path: Path) -> None:
    from posegpt.inference import PoseGPT

    model = PoseGPT.from_checkpoint(posing_checkpoint_dir)
    out = io.StringIO()
    inputs = [POSING_SAMPLES[1]["prompt"], "/reset", POSING_SAMPLES[2]["prompt"], "/quit", "never read"]
    answers = run_chat(model, inputs, out_dir=tmp_path, max_new_tokens=24, out=out)
    assert [a.text for a in answers] == [POSING_SAMPLES[1]["answer"], POSING_SAMPLES[2]["answer"]]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["turn00_pose0.obj", "turn00_pose0.png", "turn00_pose1.obj", "turn00_pose1.png"]
    text = out.getvalue()
    for name in files:
        assert str(tmp_path / name) in text
    obj = (tmp_path / "turn00_pose0.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == model.body.num_vertices
    # The OBJ holds the answer's mesh.
    verts = np.array([[float(x) for x in line.split()[1:]] for line in obj if line.startswith("v ")])
    np.testing.assert_allclose(verts, answers[0].vertices[0], atol=1e-5)
    png = np.asarray(Image.open(tmp_path / "turn00_pose0.png"))
    assert png.ndim == 3 and png.shape[1] == 2 * png.shape[0]  # front and side views
    assert (png != 255).any()  # something was drawn on the white background


@pytest.mark.slow
def test_chat_cli_one_message(posing_checkpoint_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "person.png"
    Image.new("RGB", (40, 80), (120, 80, 40)).save(image)
    proc = subprocess.run(
        [
            sys.executable, "-m", "posegpt.chat",
            "--checkpoint", str(posing_checkpoint_dir),
            "--message", POSING_SAMPLES[0]["prompt"],
            "--image", str(image),
            "--out", str(tmp_path / "out"),
            "--max-new-tokens", "12",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "posegpt> " in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "posegpt.chat", "--checkpoint", str(posing_checkpoint_dir), "--image", str(tmp_path / "x.png")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "x.png does not exist" in bad.stderr


def test_chat_feeds_an_answered_pose_back(pose_input_checkpoint_dir: Path, tmp_path: Path) -> None:
    """``<POSE_IN>`` names the latest pose of the session, ``<POSE_IN#k>`` pose k; bad numbers are errors."""
    from posegpt.inference import PoseGPT

    model = PoseGPT.from_checkpoint(pose_input_checkpoint_dir)
    out = io.StringIO()
    first, edit = POSING_SAMPLES[0]["prompt"], "<POSE_IN> Raise the left arm."
    inputs = [first, "<POSE_IN#7> Raise the left arm.", edit, "<POSE_IN#1> Raise the left arm."]
    answers = run_chat(model, inputs, out_dir=tmp_path, max_new_tokens=24, out=out)
    assert [a.text for a in answers] == ["Here is the pose <POSE>."] * 3
    text = out.getvalue()
    assert "error: <POSE_IN#7> names pose #7, but the session has poses #1 to #1" in text
    assert "(pose #1)" in text and "(pose #2)" in text and "(pose #3)" in text
    # The second turn equals a direct call with the first answer's pose as input.
    history = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": answers[0].text},
        {"role": "user", "content": edit},
    ]
    direct = model.chat(history, poses=[answers[0].poses[0]], max_new_tokens=24)
    np.testing.assert_allclose(answers[1].poses, direct.poses, atol=1e-5)
