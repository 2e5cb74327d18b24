"""MLflow logging of a training run, done by rank 0 alone.

Ray Train V2 does not take Tune's ``MLflowLoggerCallback``, so the rank-0 worker
logs itself: one MLflow run per training run, whose id is kept in the run folder
(``<storage_path>/<run_name>/mlflow_run_id``) and in every checkpoint, so a
restarted or resumed run keeps logging into the same MLflow run. The run holds
the whole config as params, the shard folder as its input dataset, per-step
training metrics, the validation pose error, loss and PA-MPJPE curves as PNG
plots, and the final checkpoint as a registered model version whose pyfunc
answers pose queries (text in, pose out): ``posegpt/tracking/pyfunc_model.py`` logged as
models-from-code with the ``posegpt`` package as its code, so it loads outside
this repository.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc

import posegpt
from posegpt.config import to_dict
from posegpt.storage import StorageConfig, exists, join, read_bytes, write_bytes
from posegpt.tracking.registry import BASE_MODEL_ARTIFACT, POSE_ENCODER_ARTIFACT, base_model_reference
from posegpt.training.config import TrainConfig

RUN_ID_FILE = "mlflow_run_id"
"""File in the run folder holding the MLflow run id shared by every (re)start of the run."""
MODEL_NAME = "model"
"""Artifact folder of the logged pyfunc model inside the MLflow run."""
CHECKPOINT_ARTIFACT = "checkpoint"
"""Name of the checkpoint folder among the pyfunc model's artifacts."""
PYFUNC_CODE = Path(posegpt.__file__).parent / "tracking" / "pyfunc_model.py"
"""The pyfunc's code (MLflow models-from-code); it runs inside the logged model, not imported here."""
QUERY_EXAMPLE = "Show me the pose of a person sitting with the left knee bent."
"""The input example logged with every version (and the text of its signature)."""


def read_run_id(run_dir: str, storage: StorageConfig | None) -> str | None:
    uri = join(run_dir, RUN_ID_FILE)
    if not exists(uri, storage):
        return None
    text = read_bytes(uri, storage).decode().strip()
    return text or None


class RunLogger:
    """Rank 0's handle on the MLflow run of a training run."""

    def __init__(self, cfg: TrainConfig, run_dir: str, default_tracking_dir: str) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.default_dir = default_tracking_dir
        self.run_id: str | None = None
        self.enabled = cfg.tracking.enabled

    def start(
        self, known_run_id: str | None, manifest: dict[str, Any], deepspeed_config: dict[str, Any]
    ) -> str | None:
        """Start the run, or resume it when this training run already has one; returns its id."""
        if not self.enabled:
            return None
        from posegpt import tracking

        tracking.configure(self.cfg.tracking, self.default_dir)
        run_id = known_run_id or read_run_id(self.run_dir, self.cfg.storage)
        if run_id and not _run_exists(run_id):
            # The run folder was logged to another tracking store: start a fresh MLflow run here.
            run_id = None
        system_metrics = self.cfg.tracking.system_metrics
        if run_id:
            mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
            # Params cannot change value once logged: a resumed run keeps its settings as an artifact.
            resumes = len(mlflow.MlflowClient().list_artifacts(run_id, "config"))
            mlflow.log_dict(to_dict(self.cfg), f"config/train-config-start{resumes}.json")
        else:
            active = mlflow.start_run(
                run_name=self.cfg.run_name,
                tags={tracking.JOB_TAG: "train", "posegpt.run_dir": self.run_dir},
                log_system_metrics=system_metrics,
            )
            run_id = active.info.run_id
            tracking.log_config(self.cfg)
            mlflow.log_dict(to_dict(self.cfg), "config/train-config-start0.json")
            mlflow.log_dict(deepspeed_config, "config/deepspeed.json")
            tracking.log_shard_dataset(self.cfg.data.shard_root, manifest, context="training")
            write_bytes(join(self.run_dir, RUN_ID_FILE), run_id.encode(), self.cfg.storage)
        self.run_id = run_id
        return run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled or not metrics:
            return
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        mlflow.log_metrics(finite, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled:
            mlflow.set_tags(tags)

    def log_plots(self) -> None:
        """Loss and validation PA-MPJPE curves (whole run history, all restarts) as PNGs."""
        if not self.enabled or self.run_id is None:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        client = mlflow.MlflowClient()
        keys = client.get_run(self.run_id).data.metrics.keys()

        def curve(key: str) -> tuple[list[int], list[float]]:
            # A resumed run logs some steps twice; keep the latest value per step.
            by_step: dict[int, tuple[int, float]] = {}
            for m in client.get_metric_history(self.run_id, key):
                if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                    by_step[m.step] = (m.timestamp, m.value)
            steps = sorted(by_step)
            return steps, [by_step[s][1] for s in steps]

        fig, ax = plt.subplots(figsize=(7, 4))
        for key in ("train/loss", "train/text_loss", "train/pose_loss"):
            if key in keys:
                ax.plot(*curve(key), label=key.split("/")[-1])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"{self.cfg.run_name}: training loss")
        mlflow.log_figure(fig, "plots/loss.png")
        plt.close(fig)

        val_keys = sorted(k for k in keys if k.startswith("val/") and k.endswith("/pa_mpjpe"))
        if val_keys:
            fig, ax = plt.subplots(figsize=(7, 4))
            for key in val_keys:
                task = key.split("/")[1]
                steps, values = curve(key)
                ax.plot(steps, values, marker="o", label=f"{task}")
                base = f"val/{task}/mean_pose_pa_mpjpe"
                if base in keys:
                    bsteps, bvalues = curve(base)
                    ax.plot(bsteps, bvalues, linestyle="--", label=f"{task} mean pose")
            ax.set_xlabel("step")
            ax.set_ylabel("PA-MPJPE (mm)")
            ax.legend()
            ax.set_title(f"{self.cfg.run_name}: held-out PA-MPJPE")
            mlflow.log_figure(fig, "plots/val_pa_mpjpe.png")
            plt.close(fig)

    def log_final_model(self, checkpoint_dir: Path, checkpoint_uri: str) -> str | None:
        """Log the final checkpoint as a pyfunc model (artifact ``model/``) and register a version.

        Returns the registered version (or None when registration is off).
        """
        if not self.enabled:
            return None
        register = self.cfg.logging.register_model
        info = log_pyfunc_model(
            checkpoint_dir, registered_model_name=self.cfg.tracking.registered_model if register else None
        )
        mlflow.set_tags({"posegpt.final_checkpoint": checkpoint_uri, "posegpt.model_uri": info.model_uri})
        version = getattr(info, "registered_model_version", None)
        return str(version) if version is not None else None

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            if mlflow.active_run() is not None:
                mlflow.end_run(status=status)


def log_pyfunc_model(checkpoint_dir: str | Path, registered_model_name: str | None = None) -> Any:
    """Log a checkpoint folder as a self-contained pyfunc model in the active run; returns MLflow's ``ModelInfo``.

    The model is ``posegpt/tracking/pyfunc_model.py`` (models-from-code) with the ``posegpt``
    package as ``code_paths``, a signature and an input example. ``MLmodel``'s metadata
    names the base model by its canonical id and its location; a local base small
    enough (``posegpt.tracking.registry.BUNDLE_BASE_MODEL_MAX_BYTES``) travels as the
    ``base_model`` artifact, so the version loads on a machine without that folder.
    """
    import pandas as pd
    from mlflow.models import infer_signature

    from posegpt.config import load_config
    from posegpt.model.checkpoint import CONFIG_FILE
    from posegpt.model.config import PoseGPTModelConfig

    checkpoint = Path(checkpoint_dir)
    model_cfg = load_config(PoseGPTModelConfig, checkpoint / CONFIG_FILE, [])
    base = base_model_reference(model_cfg.base_model)
    example = pd.DataFrame({"text": [QUERY_EXAMPLE]})
    output = pd.DataFrame({"answer": ["Here is the pose <POSE>."], "pose": [[0.0] * 72], "num_poses": [1]})
    params = {"max_new_tokens": 64}
    artifacts = {CHECKPOINT_ARTIFACT: str(checkpoint)}
    if base.bundle:
        artifacts[BASE_MODEL_ARTIFACT] = base.uri
    if model_cfg.pose_encoder.enabled:
        weights = Path(model_cfg.pose_encoder.weights)
        if not weights.is_file():
            raise FileNotFoundError(
                f"pose encoder weights {weights} (named by {checkpoint / CONFIG_FILE}) do not exist"
            )
        artifacts[POSE_ENCODER_ARTIFACT] = str(weights)
    with tempfile.TemporaryDirectory(prefix="posegpt-code-") as tmp:
        # Only the package's sources: caches, compiled files and weights of this checkout stay behind
        # (the weights a version needs are its artifacts).
        code = Path(tmp) / "posegpt"
        shutil.copytree(
            Path(posegpt.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors")
        )
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(PYFUNC_CODE),
            code_paths=[str(code)],
            artifacts=artifacts,
            signature=query_signature(infer_signature(example, output, params=params)),
            input_example=(example, params),
            pip_requirements=_requirements(),
            metadata={
                "base_model_id": base.canonical_id,
                "base_model_uri": base.uri,
                "base_model_bundled": base.bundle,
            },
            registered_model_name=registered_model_name,
        )


def query_signature(inferred: Any) -> Any:
    """``inferred`` with an optional ``poses`` input column: per query, the poses its ``<POSE_IN>``
    tokens stand for (72 axis-angle floats each). MLflow drops columns a signature does not
    declare, and an example cannot show an optional column, so it is declared here."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([*inferred.inputs.inputs, ColSpec(Array(Array("double")), "poses", required=False)])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)


def _run_exists(run_id: str) -> bool:
    try:
        mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def _requirements() -> list[str]:
    """Pinned versions of what loading the pyfunc needs (no inference by running the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in (
        "torch", "transformers", "peft", "safetensors", "tokenizers", "numpy", "pandas", "smplx",
        "pyyaml", "pillow", "pyarrow", "boto3", "mlflow",
    ):  # fmt: skip
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out
