"""A registered PoseGPT version loads and answers outside the repository, with its base model bundled."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import yaml

from posegpt.tracking.registry import (
    BASE_MODEL_ARTIFACT,
    POSE_ENCODER_ARTIFACT,
    base_model_reference,
    fetch_model_checkpoint,
)
from tests.fixtures.model import POSING_SAMPLES

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [s["prompt"] for s in POSING_SAMPLES]

OUTSIDE = """
import json, sys, importlib.util
sys.path.append({site!r})  # the installed packages, without the .pth that puts the checkout on sys.path
assert importlib.util.find_spec("posegpt") is None, "posegpt must come from the model, not the checkout"
assert not [p for p in sys.path if p.startswith({repo!r}) and not p.startswith({repo!r} + "/.venv/")]
import mlflow, pandas as pd
mlflow.set_tracking_uri({tracking!r})
model = mlflow.pyfunc.load_model({uri!r})
out = model.predict(pd.DataFrame({{"text": {prompts!r}}}), params={{"max_new_tokens": 12}})
print("RESULT " + json.dumps(out.to_dict(orient="list")))
"""


@pytest.mark.parametrize(
    "base,expected",
    [
        ("s3://bucket/models/llava-1.5-7b-hf", "llava-hf/llava-1.5-7b-hf"),
        ("s3://bucket/models/llava-1.5-13b-hf/", "llava-hf/llava-1.5-13b-hf"),
        ("s3://bucket/models/my-finetune", "my-finetune"),
    ],
)
def test_base_model_is_named_by_its_canonical_id(base: str, expected: str) -> None:
    ref = base_model_reference(base)
    assert (ref.canonical_id, ref.uri, ref.bundle) == (expected, base, False)


def test_a_missing_local_base_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        base_model_reference(str(tmp_path / "tiny-llava"))


@pytest.fixture(scope="module")
def registered(tiny_base_dir: Path, posing_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``posing_checkpoint_dir`` registered as training does, then its base folder deleted."""
    import mlflow

    from posegpt import tracking
    from posegpt.tracking import TrackingConfig
    from posegpt.training.mlflow_logging import log_pyfunc_model

    root = tmp_path_factory.mktemp("registry")
    base = root / "models" / "tiny-llava"
    shutil.copytree(tiny_base_dir, base)
    checkpoint = root / "checkpoint"
    shutil.copytree(posing_checkpoint_dir, checkpoint)
    config = yaml.safe_load((checkpoint / "config.yaml").read_text())
    config["base_model"] = str(base)
    encoder = config.get("pose_encoder") or {}
    if encoder.get("kind", "none") != "none":
        # The frozen pose encoder's weights, like the base, must come with the version.
        weights = root / "models" / "pose_encoder.safetensors"
        shutil.copy2(encoder["weights"], weights)
        encoder["weights"] = str(weights)
    (checkpoint / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.configure(TrackingConfig(tracking_uri=uri, experiment="registry"), root)
    with mlflow.start_run():
        info = log_pyfunc_model(checkpoint, registered_model_name="posegpt-registry-test")
    shutil.rmtree(root / "models")  # a machine without the base folder (and weights) the checkpoint names
    return uri, f"models:/posegpt-registry-test/{info.registered_model_version}", info


def test_version_names_its_base_and_carries_signature_example_and_code(registered) -> None:
    import mlflow

    uri, _, info = registered
    assert info.metadata["base_model_id"] == "posegpt/tiny-llava"
    assert info.metadata["base_model_bundled"] is True
    assert info.signature.inputs.input_names() == ["text", "poses"]
    assert [c.required for c in info.signature.inputs.inputs] == [True, False]
    assert {p.name for p in info.signature.params.params} == {"max_new_tokens"}
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, tracking_uri=uri))
    assert (local / "code" / "posegpt" / "inference.py").is_file()
    assert not list((local / "code").rglob("__pycache__")) and not list(
        (local / "code").rglob("*.safetensors")
    )
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["text"]
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert "model_code_path" in flavor, "models-from-code, not a pickle referring to the checkout"
    assert BASE_MODEL_ARTIFACT in flavor["artifacts"]
    logged = yaml.safe_load((local / flavor["artifacts"]["checkpoint"]["path"] / "config.yaml").read_text())
    has_encoder = (logged.get("pose_encoder") or {}).get("kind", "none") != "none"
    assert (POSE_ENCODER_ARTIFACT in flavor["artifacts"]) == has_encoder


@pytest.mark.slow
def test_registered_version_loads_and_answers_outside_the_repository(
    registered, posing_checkpoint_dir: Path, tiny_base_dir: Path, tmp_path: Path
) -> None:
    from posegpt.inference import PoseGPT

    uri, model_uri, _ = registered
    site = sysconfig.get_paths()["purelib"]
    script = OUTSIDE.format(site=site, repo=str(REPO), tracking=uri, uri=model_uri, prompts=PROMPTS)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=outside,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])

    # The same checkpoint read in this process, from the base the fixture built.
    reference = PoseGPT.from_checkpoint(posing_checkpoint_dir).batch(
        [{"messages": p} for p in PROMPTS], max_new_tokens=12
    )
    assert out["answer"] == [a.text for a in reference]
    assert out["num_poses"] == [len(a.poses) for a in reference]
    assert sum(out["num_poses"]) > 0, "the posing checkpoint answers poses"
    for got, ref in zip(out["pose"], reference, strict=True):
        expected = ref.poses[0] if len(ref.poses) else np.zeros(0)
        np.testing.assert_allclose(np.asarray(got, dtype=float), expected, atol=1e-4)


def test_fetched_checkpoint_reads_the_bundled_base(registered, tmp_path: Path) -> None:
    from posegpt.inference import PoseGPT

    uri, model_uri, _ = registered
    folder = Path(fetch_model_checkpoint(model_uri, uri, tmp_path))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert Path(config["base_model"]).is_dir() and config["build_tiny_if_missing"] is False
    answer = PoseGPT.from_checkpoint(folder).chat(PROMPTS[0], max_new_tokens=12)
    assert "<POSE>" in answer.text


@pytest.mark.slow
def test_a_poses_column_passes_the_registered_signature(registered, posing_checkpoint_dir: Path) -> None:
    """MLflow drops undeclared columns before ``predict``: the optional ``poses`` column must get through."""
    import mlflow
    import pandas as pd

    from posegpt.inference import PoseGPT

    uri, model_uri, _ = registered
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(model_uri)
    pose = (np.linspace(-0.5, 0.5, 72)).tolist()
    text = "<POSE_IN> Now raise the left arm."
    frame = pd.DataFrame({"text": [text, PROMPTS[0]], "poses": [[pose], None]})
    out = model.predict(frame, params={"max_new_tokens": 12})
    library = PoseGPT.from_checkpoint(posing_checkpoint_dir)
    with_pose = library.chat(text, poses=[np.asarray(pose, np.float32)], max_new_tokens=12)
    assert out["answer"].tolist()[0] == with_pose.text
    assert out["num_poses"].tolist()[0] == len(with_pose.poses)
    if len(with_pose.poses):
        np.testing.assert_allclose(out["pose"].tolist()[0], with_pose.poses[0], atol=1e-5)
    # Without the column the model still answers (it is optional).
    assert len(model.predict(pd.DataFrame({"text": [PROMPTS[0]]}), params={"max_new_tokens": 4})) == 1
