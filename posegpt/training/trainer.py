"""The driver side of training: pre-flight checks, the ``TorchTrainer``, ``fit()``.

Everything that can be checked before a worker starts is checked here, with
errors that name the file or setting: the shard folder and its manifest's schema
version, every task the mix reads having rows, the S3 endpoints answering, the
config's keys (``load_config`` already rejects unknown ones), enough CPUs left
for Ray Data's readers and encoding actors. Then one Ray Dataset per task (with
``data.encode_on: ray_data``, ending in the ``posegpt.training.encoding`` stage that
decodes and tokenises rows on CPU actors) goes to a ``TorchTrainer`` (Ray Train V2)
whose workers run ``posegpt.training.loop.train_loop_per_worker``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from posegpt.config import to_dict
from posegpt.storage import arrow_filesystem, check_reachable, exists, is_s3, join, read_bytes
from posegpt.training.config import TrainConfig
from posegpt.training.guard import STOP_MARKER, TrainingStopped, decode_message
from posegpt.training.shards import check_shards, open_datasets

log = logging.getLogger(__name__)


class PreflightError(ValueError):
    """A setting or resource that would make the workers fail, found before they start."""


@dataclass
class TrainOutcome:
    """What ``train`` returns."""

    result: Any
    """Ray Train's ``Result`` (``metrics`` is None when this fit reported no checkpoint)."""
    run_dir: str
    """``<storage_path>/<run_name>`` (local path or ``s3://`` URI)."""
    checkpoint_uri: str | None
    """The latest checkpoint of the run (this fit's or an earlier one's)."""
    config: TrainConfig
    """The config the workers ran with (paths absolute, tracking URI resolved)."""


def run_dir(cfg: TrainConfig) -> str:
    return join(cfg.storage_path, cfg.run_name)


def _absolute(path: str) -> str:
    return path if is_s3(path) else str(Path(path).expanduser().resolve())


def _absolute_sqlite(uri: str) -> str:
    """``sqlite:///relative.db`` made absolute, so that every worker opens the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).expanduser().resolve())
    return uri


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Paths made absolute (workers do not share the driver's working folder) and the tracking URI fixed."""
    from posegpt import tracking

    model = cfg.model
    if not is_s3(model.base_model):
        model = dataclasses.replace(model, base_model=_absolute(model.base_model))
    resolved_tracking = cfg.tracking
    if cfg.tracking.enabled:
        uri = tracking.resolve_tracking_uri(cfg.tracking, cfg.storage_path)
        resolved_tracking = dataclasses.replace(cfg.tracking, tracking_uri=_absolute_sqlite(uri))
    logging_section = cfg.logging
    if logging_section.status_dir:
        logging_section = dataclasses.replace(
            logging_section, status_dir=_absolute(logging_section.status_dir)
        )
    return dataclasses.replace(
        cfg,
        storage_path=_absolute(cfg.storage_path),
        cache_dir=_absolute(cfg.cache_dir) if cfg.cache_dir else None,
        data=dataclasses.replace(cfg.data, shard_root=_absolute(cfg.data.shard_root)),
        model=model,
        tracking=resolved_tracking,
        logging=logging_section,
    )


def preflight(cfg: TrainConfig) -> dict[str, Any]:
    """Check shards, storage and model before any worker starts; returns the shard manifest."""
    for what, uri in (("data.shard_root", cfg.data.shard_root), ("storage_path", cfg.storage_path)):
        try:
            check_reachable(uri, cfg.storage)
        except ValueError as exc:
            raise PreflightError(f"{what}: {exc}") from exc
    manifest = check_shards(
        cfg.data.shard_root,
        cfg.active_tasks(),
        cfg.data.train_split,
        cfg.validation.tasks if cfg.validation.every > 0 and cfg.validation.samples > 0 else [],
        cfg.data.val_split,
        cfg.scaling.num_workers,
        cfg.storage,
    )
    if is_s3(cfg.model.base_model):
        check_reachable(cfg.model.base_model, cfg.storage)
    elif cfg.model.build_tiny_if_missing:
        # Built once here rather than raced by every worker on the node.
        from posegpt.model.tiny import ensure_tiny_base

        ensure_tiny_base(cfg.model.base_model, cfg.model.tiny)
    elif not Path(cfg.model.base_model).is_dir():
        raise PreflightError(f"model.base_model {cfg.model.base_model} is not a folder")
    return manifest


POSE_TASKS: tuple[str, ...] = ("image2pose", "text2pose")
"""Tasks whose training poses give the pose head's initial mean pose (one frame convention for both)."""


def with_mean_pose_head(cfg: TrainConfig) -> TrainConfig:
    """``model.pose_head_mean_pose`` filled with the chordal mean of the training poses when the head starts from the mean.

    Under DESIGN.md's frames an upright person's root is about Rx(180°), the antipode of the
    identity: a head that starts at the identity has its root exactly where Gram–Schmidt + L1
    give it no gradient. Starting every joint at the data's mean avoids that basin.
    """
    model = cfg.model
    if model.pose_head_init != "mean" or model.pose_head_mean_pose is not None:
        return cfg
    from posegpt.training.shards import first_poses, read_rows
    from posegpt.training.validation import training_mean_pose

    tasks = [t for t in POSE_TASKS if t in cfg.active_tasks()]
    per_task = max(1, cfg.validation.mean_pose_rows // max(1, len(tasks)))
    rows = [
        row
        for task in tasks
        for row in read_rows(
            cfg.data.shard_root, task, cfg.data.train_split, per_task, cfg.storage, columns=["poses"]
        )
    ]
    poses = first_poses(rows)
    if len(poses) == 0:
        raise PreflightError(
            f"model.pose_head_init=mean needs training poses, but {tasks} of {cfg.data.shard_root} hold none; "
            "set model.pose_head_mean_pose or model.pose_head_init=identity"
        )
    mean = [round(float(v), 6) for v in training_mean_pose(poses)]
    log.info("pose head starts at the mean of %d training poses (root %s)", len(poses), mean[:3])
    return dataclasses.replace(cfg, model=dataclasses.replace(model, pose_head_mean_pose=mean))


def check_cluster(cfg: TrainConfig) -> None:
    """Ray Data needs CPUs the training workers leave free, or reading (and encoding) never starts."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    per_worker = float(cfg.scaling.resources_per_worker.get("CPU", 0.0 if cfg.scaling.use_gpu else 1.0))
    needed = per_worker * cfg.scaling.num_workers
    if total >= needed and total - needed < 1.0:
        raise PreflightError(
            f"the Ray cluster has {total:g} CPUs and the {cfg.scaling.num_workers} training workers reserve "
            f"{needed:g}: Ray Data needs at least 1 CPU left to read the shards, or training waits forever. "
            "Lower scaling.resources_per_worker.CPU (e.g. 0.5) or add CPUs"
        )
    if cfg.data.encode_on == "ray_data":
        tasks = len(cfg.active_tasks())
        encoding = tasks * cfg.data.encode_actors * cfg.data.encode_cpus
        if total - needed < encoding + cfg.data.read_cpus:
            raise PreflightError(
                f"the Ray cluster has {total:g} CPUs, the training workers reserve {needed:g}, and the encoding "
                f"actors ({tasks} tasks x data.encode_actors {cfg.data.encode_actors} x data.encode_cpus "
                f"{cfg.data.encode_cpus:g}) plus one read task (data.read_cpus {cfg.data.read_cpus:g}) need "
                f"{encoding + cfg.data.read_cpus:g}: the actors would never all start. Lower data.encode_cpus "
                "or data.encode_actors, or set data.encode_on=worker"
            )


def _storage_args(cfg: TrainConfig) -> dict[str, Any]:
    if not is_s3(cfg.storage_path):
        Path(cfg.storage_path).mkdir(parents=True, exist_ok=True)
        return {"storage_path": cfg.storage_path}
    fs, path = arrow_filesystem(cfg.storage_path, cfg.storage)
    return {"storage_path": path, "storage_filesystem": fs}


def build_trainer(cfg: TrainConfig, manifest: dict[str, Any]) -> Any:
    """The ``TorchTrainer`` for a resolved, checked config (the pose head's mean pose filled in here)."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from posegpt.training.loop import WorkerPayload, train_loop_per_worker

    cfg = with_mean_pose_head(cfg)

    payload = WorkerPayload(config=to_dict(cfg), manifest=manifest, run_dir=run_dir(cfg))
    run_config = ray.train.RunConfig(
        name=cfg.run_name,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep_last),
        failure_config=ray.train.FailureConfig(max_failures=cfg.failure.max_failures),
        **_storage_args(cfg),
    )
    scaling = ray.train.ScalingConfig(
        num_workers=cfg.scaling.num_workers,
        use_gpu=cfg.scaling.use_gpu,
        resources_per_worker=dict(cfg.scaling.resources_per_worker),
    )
    # Progress bars of three streams that restart every epoch would flood the job's log.
    ray.data.DataContext.get_current().enable_progress_bars = False
    datasets = open_datasets(
        cfg.data.shard_root, cfg.active_tasks(), cfg.data.train_split, cfg.data.read_cpus, cfg.storage
    )
    if cfg.data.encode_on == "ray_data":
        from posegpt.runtime import DEFAULT_CACHE_DIR
        from posegpt.training.encoding import encode_dataset

        # Decoding and tokenising on CPU actors: the training step only pads and stacks.
        datasets = {
            task: encode_dataset(
                ds,
                cfg.model,
                str(cfg.cache_dir or DEFAULT_CACHE_DIR),
                cfg.storage,
                actors=cfg.data.encode_actors,
                cpus=cfg.data.encode_cpus,
                batch_size=cfg.data.encode_batch_size,
            )
            for task, ds in datasets.items()
        }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=dataclasses.asdict(payload),
        scaling_config=scaling,
        run_config=run_config,
        datasets=datasets,
    )


CHECKPOINT_NAME = re.compile(r"^checkpoint_step(\d+)_start(\d+)_(\d+)$")
"""Checkpoint folder names in a run folder: ``checkpoint_step<step>_start<n>_<start time>``."""


def latest_checkpoint(cfg: TrainConfig) -> str | None:
    """The run's checkpoint with the highest step (of those, the latest start's), or None."""
    folder = run_dir(cfg)
    fs, path = arrow_filesystem(folder, cfg.storage)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    found = []
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=False)):
        match = CHECKPOINT_NAME.match(info.base_name)
        if match and info.type == pafs.FileType.Directory:
            found.append((int(match.group(1)), int(match.group(3)), info.base_name))
    return join(folder, max(found)[2]) if found else None


def train(cfg: TrainConfig) -> TrainOutcome:
    """Check, build and fit; raise ``TrainingStopped`` when the workers stopped on bad data or a NaN loss."""
    import ray

    cfg = resolve_config(cfg)
    manifest = preflight(cfg)
    if not ray.is_initialized():
        ray.init()
    check_cluster(cfg)
    marker = join(run_dir(cfg), STOP_MARKER)
    _remove(marker, cfg)
    trainer = build_trainer(cfg, manifest)
    result = trainer.fit()
    if exists(marker, cfg.storage):
        raise TrainingStopped(decode_message(read_bytes(marker, cfg.storage)))
    return TrainOutcome(
        result=result, run_dir=run_dir(cfg), checkpoint_uri=latest_checkpoint(cfg), config=cfg
    )


def _remove(uri: str, cfg: TrainConfig) -> None:
    """Drop a stale stop marker of an earlier fit of the same run."""
    if not exists(uri, cfg.storage):
        return
    fs, path = arrow_filesystem(uri, cfg.storage)
    fs.delete_file(path)
