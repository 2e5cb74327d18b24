"""How an evaluation finds, and links to, the MLflow run of the checkpoint it evaluates.

The training run is found from a ``models:/name/version`` URI (the registered
version's run), or from the files training writes: the checkpoint's
``train_state.json`` (``mlflow_run_id``) or the run folder's ``mlflow_run_id``.
When that run is in the evaluation's tracking store, the evaluation is logged as
its child (``mlflow.parentRunId``); otherwise the id is kept as the
``posegpt.train_run_id`` tag so that a later comparison over a merged store still
links them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from posegpt.storage import StorageConfig, exists, is_s3, join, read_bytes
from posegpt.tracking import JOB_TAG
from posegpt.tracking.registry import (
    checkpoint_subpath,
    fetch_model_checkpoint,
    model_version,
    parse_model_uri,
    run_id_from_model_uri,
)

EVAL_JOB = "evaluate"
TRAIN_RUN_TAG = "posegpt.train_run_id"
"""Tag holding the run id of the training run an evaluation belongs to."""
CHECKPOINT_TAG = "posegpt.checkpoint"
"""Tag holding the checkpoint (path, URI or model URI) an evaluation read."""
PARENT_TAG = "mlflow.parentRunId"

TRAIN_STATE_FILE = "train_state.json"
"""File of a training checkpoint holding ``mlflow_run_id`` (posegpt/training/state.py)."""
RUN_ID_FILE = "mlflow_run_id"
"""File of a training run folder (the checkpoint's parent) holding the run id (posegpt/training/mlflow_logging.py)."""

__all__ = [
    "JOB_TAG",
    "PromotionConfig",
    "checkpoint_for_workers",
    "checkpoint_subpath",
    "fetch_model_checkpoint",
    "parse_model_uri",
    "promote_if_better",
    "run_id_from_checkpoint",
    "run_id_from_model_uri",
]


def checkpoint_for_workers(uri: str, tracking_uri: str | None, storage: StorageConfig | None = None) -> str:
    """Where the driver and the Ray workers read the checkpoint of ``uri``.

    For ``models:/`` with artifacts on a local path or ``s3://``: the checkpoint
    folder inside the model version's artifacts, read where it lies. Workers that
    each resolved ``models:/`` would all open the tracking store, and several
    processes opening one sqlite file at once race in its schema check. Otherwise
    (a tracking server's ``mlflow-artifacts:/``), ``uri`` itself: each worker
    downloads it through the server.
    """
    if parse_model_uri(uri) is None or not tracking_uri:
        return uri
    client, mv = model_version(uri, tracking_uri)
    source = client.get_model_version_download_uri(mv.name, mv.version)
    if source.startswith("file://"):
        source = source[len("file://") :]
    if not is_s3(source) and ("://" in source or ":/" in source):
        return uri
    return join(source, checkpoint_subpath(source, storage))


def run_id_from_checkpoint(location: str, storage: StorageConfig | None = None) -> str | None:
    """The training run of a checkpoint folder (local or ``s3://``): its ``train_state.json``, else the run folder's ``mlflow_run_id``."""
    state_uri = join(location, TRAIN_STATE_FILE)
    if exists(state_uri, storage):
        try:
            run_id = json.loads(read_bytes(state_uri, storage)).get("mlflow_run_id")
        except (json.JSONDecodeError, AttributeError):
            run_id = None
        if isinstance(run_id, str) and run_id:
            return run_id
    parent = (
        location.rstrip("/").rsplit("/", 1)[0] if is_s3(location) else str(Path(location).resolve().parent)
    )
    id_uri = join(parent, RUN_ID_FILE)
    if exists(id_uri, storage):
        return read_bytes(id_uri, storage).decode().strip() or None
    return None


def run_exists(run_id: str, tracking_uri: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except MlflowException:
        return False
    return run.info.lifecycle_stage != "deleted"


SCORE_TAG_PREFIX = "posegpt.eval."
"""Model version tag ``posegpt.eval.<metric>``: the score the latest evaluation of that version gave it."""
EVAL_RUN_VERSION_TAG = "posegpt.eval_run_id"
"""Model version tag: the evaluation run behind its ``posegpt.eval.*`` scores."""


@dataclass
class PromotionConfig:
    """When an evaluation of a registered version moves the model's alias (what the service loads) to it."""

    alias: str = "champion"
    """Alias the evaluation moves to the version it scored when that version beats the holder; empty: never promote."""
    metric: str = "text2pose/pa_mpjpe"
    """Evaluation metric compared between the version and the alias's holder (a key of the evaluation run's metrics)."""
    higher_is_better: bool = False
    """True for recalls and rates; False for errors such as PA-MPJPE."""


@dataclass
class Promotion:
    """What an evaluation did with the alias, and why."""

    promoted: bool
    reason: str
    version: str | None = None
    previous: str | None = None


def promote_if_better(
    cfg: PromotionConfig,
    checkpoint: str,
    metrics: dict[str, float],
    tracking_uri: str | None,
    eval_run_id: str | None = None,
) -> Promotion:
    """Record the version's score on ``cfg.metric`` and move ``cfg.alias`` to it when it beats the holder.

    Only a ``models:/`` checkpoint has a version to promote. The holder's score is its
    ``posegpt.eval.<metric>`` tag; a holder without one (an alias set by hand) is replaced.
    Ties keep the holder.
    """
    from mlflow.exceptions import MlflowException

    if not cfg.alias:
        return Promotion(False, "promotion is off (promotion.alias is empty)")
    if parse_model_uri(checkpoint) is None or not tracking_uri:
        return Promotion(False, f"{checkpoint} is not a registered version (models:/...): nothing to promote")
    score = metrics.get(cfg.metric)
    if score is None or score != score:
        return Promotion(
            False, f"the evaluation has no {cfg.metric!r} (promotion.metric): alias left as it was"
        )
    client, mv = model_version(checkpoint, tracking_uri)
    version = str(mv.version)
    tag = SCORE_TAG_PREFIX + cfg.metric
    client.set_model_version_tag(mv.name, mv.version, tag, repr(float(score)))
    if eval_run_id:
        client.set_model_version_tag(mv.name, mv.version, EVAL_RUN_VERSION_TAG, eval_run_id)
    try:
        holder = client.get_model_version_by_alias(mv.name, cfg.alias)
    except MlflowException:
        holder = None
    where = f"{mv.name} version {version} ({cfg.metric} {score:.4g})"
    if holder is not None and str(holder.version) == version:
        return Promotion(False, f"{where} already holds @{cfg.alias}", version, version)
    held = (holder.tags or {}).get(tag) if holder is not None else None
    if holder is not None and held is not None:
        best = float(held)
        better = score > best if cfg.higher_is_better else score < best
        if not better:
            return Promotion(
                False,
                f"{where} does not beat @{cfg.alias} = version {holder.version} ({best:.4g})",
                version,
                str(holder.version),
            )
    client.set_registered_model_alias(mv.name, cfg.alias, mv.version)
    previous = str(holder.version) if holder is not None else None
    was = (
        f"version {previous}" + (f" ({float(held):.4g})" if held is not None else ", unscored")
        if previous
        else "none"
    )
    return Promotion(True, f"{where} is now @{cfg.alias} (was {was})", version, previous)
