"""MLflow conventions shared by every job: one tracking URI, shard folders as datasets.

Every job logs a run: ``prepare`` registers its shard folder as an MLflow dataset,
``train`` logs that same dataset as its input (so a model version leads back to
the exact shards), ``evaluate`` logs against the checkpoint's run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posegpt.config import flatten
from posegpt.storage import is_s3

JOB_TAG = "posegpt.job"
"""Tag naming the job that logged a run (prepare, train, evaluate, train_detector); compare filters on it."""
MLFLOW_PARAM_LIMIT = 6000
"""Longest parameter value MLflow stores; longer ones are cut with a marker."""


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    tracking_uri: str | None = None
    """MLflow tracking URI (``http://mlflow:5000``, ``sqlite:///path.db``); empty: ``MLFLOW_TRACKING_URI`` when set, else a sqlite file under the job's output folder."""
    experiment: str = "posegpt"
    """MLflow experiment name shared by the jobs of one project."""
    registered_model: str = "posegpt"
    """Name under which training registers model versions."""
    enabled: bool = True
    """Set false to run without any MLflow logging (quick local experiments)."""
    system_metrics: bool = True
    """Log the machine's CPU, memory, disk and network use (and GPUs, where pynvml sees them) as ``system/*`` metrics of each run."""


ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
"""Environment variable naming the tracking server when the config names none (MLflow's own convention)."""


def apply_environment(config: Any, environ: Mapping[str, str]) -> None:
    """Fill an empty ``config.tracking.tracking_uri`` from ``MLFLOW_TRACKING_URI``; entry points pass ``os.environ``.

    A URI given in the preset or on the command line wins; the library itself never reads the environment.
    """
    section = getattr(config, "tracking", None)
    if isinstance(section, TrackingConfig) and not section.tracking_uri and environ.get(ENV_TRACKING_URI):
        section.tracking_uri = environ[ENV_TRACKING_URI]


def resolve_tracking_uri(cfg: TrackingConfig, default_dir: str | Path) -> str:
    """The configured URI, or ``sqlite:///<default_dir>/mlflow.db`` (folder created)."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if is_s3(str(default_dir)):
        raise ValueError(
            f"tracking.tracking_uri must be set when the output folder is on S3 ({default_dir}): "
            "a sqlite store cannot live there"
        )
    folder = Path(default_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_location(tracking_uri: str) -> str | None:
    """Artifact root for a new experiment: ``mlartifacts/`` beside a sqlite store; None (the server's) otherwise.

    MLflow's default for a sqlite store is ``./mlruns`` in whatever folder the job
    started in; beside the database, a store and its artifacts move together.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix) :]).expanduser().resolve().parent / "mlartifacts").as_uri()


def configure(cfg: TrackingConfig, default_dir: str | Path) -> str:
    """Point MLflow at the tracking store and experiment (created if missing); returns the URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(cfg, default_dir)
    exported = os.environ.get(ENV_TRACKING_URI)
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI, where a job started from this process would take it for the user's
    # choice (apply_environment): this process keeps it, the environment is left as it was.
    if exported is None:
        os.environ.pop(ENV_TRACKING_URI, None)
    else:
        os.environ[ENV_TRACKING_URI] = exported
    location = artifact_location(uri)
    if location is not None:
        client = mlflow.MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(cfg.experiment) is None:
            try:
                client.create_experiment(cfg.experiment, artifact_location=location)
            except MlflowException:  # another job of the same store created it meanwhile
                pass
    mlflow.set_experiment(cfg.experiment)
    return uri


@contextmanager
def run(
    cfg: TrackingConfig,
    default_dir: str | Path,
    run_name: str,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[Any]:
    """Start (or resume, given ``run_id``) an MLflow run; yields the active run or None when disabled."""
    if not cfg.enabled:
        yield None
        return
    import mlflow

    configure(cfg, default_dir)
    kwargs: dict[str, Any] = {"run_id": run_id} if run_id else {"run_name": run_name}
    if parent_run_id:
        kwargs["parent_run_id"] = parent_run_id
        kwargs["nested"] = True
    with mlflow.start_run(tags=tags, log_system_metrics=cfg.system_metrics, **kwargs) as active:
        yield active


def log_config(config: Any) -> None:
    """Log every config key as an MLflow param (dotted names)."""
    import mlflow

    params = {}
    for key, value in flatten(config).items():
        text = json.dumps(value) if not isinstance(value, str) else value
        if len(text) > MLFLOW_PARAM_LIMIT:
            text = text[: MLFLOW_PARAM_LIMIT - 20] + "...(truncated)"
        params[key] = text
    mlflow.log_params(params)


def shard_dataset(shard_root: str, manifest: dict[str, Any], name: str | None = None) -> Any:
    """An ``mlflow.data`` dataset describing a shard folder; its digest is the manifest's."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    uri = shard_root if is_s3(shard_root) else Path(shard_root).resolve().as_uri()
    source = resolve_dataset_source(uri)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    return MetaDataset(source=source, name=name or Path(str(shard_root).rstrip("/")).name, digest=digest)


def log_shard_dataset(
    shard_root: str, manifest: dict[str, Any], context: str, name: str | None = None
) -> None:
    """Record the shard folder as an input of the active run (``context``: preparing, training, evaluation)."""
    import mlflow

    mlflow.log_input(shard_dataset(shard_root, manifest, name), context=context)
