"""``jobs/demo.py`` end to end on the small world with a few training steps: every step runs, reruns reuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.demo import DemoConfig, main
from posegpt.config import load_config

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "demo" / "default.yaml"

QUICK = [
    "world_size=small",
    # The small world's detector as the tests' fixture trains it (same config and data: reused weights).
    "detector_overrides=[]",
    # Rows encoded on the workers, as docs/training.md advises for the small world: Ray Data's seven
    # encoding actors took two of the run's four minutes to start on 2 cores. The preset's actor path
    # runs in tests/posegpt/training/test_ray_training.py.
    "train_overrides=[schedule.max_steps=4,schedule.warmup_steps=1,checkpoint.every=4,validation.every=4,"
    "validation.samples=8,logging.every=2,data.encode_on=worker]",
    # Two tasks are enough to see the evaluation step's report and summary; every task's metrics are
    # tested in tests/posegpt/evaluation and tests/jobs/test_evaluate_job.py.
    "eval_overrides=[data.max_samples=6,inference.max_new_tokens=12,report.render_size=96,retrieval.model.epochs=3,"
    "'data.tasks=[image2pose,text2pose]']",
    "serve_port=0",
]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "jobs/demo.py", "--config", str(PRESET), f"out={out}", *QUICK, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.slow
def test_demo_runs_every_step_and_reuses_them(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = _run(out)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    log = first.stdout
    for step in range(1, 8):
        assert f"{step}/7" in log, f"step {step} missing from the demo's progress lines"
    # The summary names where things are and the metric table against the baselines.
    summary = log[log.index("PoseGPT demo finished") :]
    for text in ("QA shards", "checkpoint", "report", "mean training pose", "PA-MPJPE", "mlflow ui"):
        assert text in summary, text

    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert (
        manifest["counts"]["text2pose"]["train"] > 0
        and manifest["read"] == manifest["rows"] + manifest["rejects"]
    )
    shard = next((out / "shards" / "text2pose" / "test").glob("*.parquet"))
    assert pq.read_table(shard).num_rows > 0
    assert (out / "eval" / "report" / "report.md").is_file()
    assert (out / "compare" / "runs.csv").read_text().count("\n") >= 2  # header + the training run
    answers = json.loads((out / "serve" / "answers.json").read_text())
    assert len(answers) == 7
    # The last query is a multi-person scene with detect: true; every person found is listed.
    assert answers[-1]["people"] is not None and len(answers[-1]["people"]) >= 1
    # One rendered body fetched from the service per pose answered (a 4-step model may answer none).
    pngs = list((out / "serve").glob("query*_pose*.png"))
    assert len(pngs) == sum(len(a["poses"]) for a in answers)
    assert (out / "mlflow.db").is_file() and (out / "mlartifacts").is_dir()

    # The rerun checks the data steps' reuse and stops after them (last_step=3).
    second = _run(out, "last_step=3")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "1/7 synthetic world: reusing" in second.stdout
    assert "3/7 QA shards: reusing" in second.stdout
    assert "(reused)" in second.stdout  # the detector's weights
    assert "4/7" not in second.stdout and "PoseGPT demo finished" in second.stdout
    assert "checkpoint" not in second.stdout[second.stdout.index("PoseGPT demo finished") :]


def test_last_step_outside_the_steps_exits_1_naming_it(capsys) -> None:
    assert main(["--config", str(PRESET), "last_step=8"]) == 1
    assert "last_step must be in 1..7" in capsys.readouterr().err


def test_unknown_demo_key_exits_2_naming_it(capsys) -> None:
    assert main(["--config", str(PRESET), "trian_overrides=[]"]) == 2
    assert "trian_overrides" in capsys.readouterr().err


def test_preset_loads_with_documented_defaults() -> None:
    cfg = load_config(DemoConfig, PRESET)
    assert cfg.out == "outputs/demo" and cfg.world_size == "medium" and cfg.serve
    for preset in (
        cfg.detector_preset,
        cfg.prepare_preset,
        cfg.train_preset,
        cfg.eval_preset,
        cfg.compare_preset,
    ):
        assert (REPO / preset).is_file(), preset
