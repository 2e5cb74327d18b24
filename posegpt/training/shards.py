"""The QA shards as training reads them: pre-flight checks, Ray Datasets, the validation slice.

The driver checks the shard folder before any worker starts (it exists, its
manifest has this code's schema version, every task the mix reads has rows) and
opens one Ray Dataset per task; workers stream them with ``get_dataset_shard``.
The small things every worker reads directly with pyarrow: the held-out
validation slice and the training poses the mean-pose baseline is made of.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from posegpt.body.skeleton import POSE_DIM
from posegpt.storage import StorageConfig, arrow_filesystem, check_reachable, join, read_bytes

MANIFEST_FILE = "manifest.json"


class ShardError(ValueError):
    """The shard folder cannot be trained on (missing, wrong schema version, empty task)."""


def split_uri(shard_root: str, task: str, split: str) -> str:
    return join(shard_root, task, split)


def read_manifest(shard_root: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """The shard folder's manifest; clear errors for a missing folder or an unreadable file."""
    check_reachable(shard_root, storage)
    fs, path = arrow_filesystem(shard_root, storage)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise ShardError(
            f"shard folder {shard_root} does not exist (data.shard_root; write it with jobs/prepare.py)"
        )
    uri = join(shard_root, MANIFEST_FILE)
    try:
        data = read_bytes(uri, storage)
    except FileNotFoundError as exc:
        raise ShardError(
            f"shard folder {shard_root} has no {MANIFEST_FILE}: not written by jobs/prepare.py"
        ) from exc
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ShardError(f"{uri} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ShardError(f"{uri}: expected a JSON object")
    return manifest


def manifest_rows(manifest: dict[str, Any], task: str, split: str) -> int:
    """Rows of ``task``/``split`` according to the manifest (0 when absent)."""
    counts = manifest.get("counts", {})
    return int(counts.get(task, {}).get(split, 0) or 0)


def list_files(shard_root: str, task: str, split: str, storage: StorageConfig | None = None) -> list[str]:
    """Sorted Parquet file paths (inside the arrow filesystem) of one task and split."""
    fs, path = arrow_filesystem(split_uri(shard_root, task, split), storage)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet"))


def check_shards(
    shard_root: str,
    tasks: Sequence[str],
    train_split: str,
    val_tasks: Sequence[str],
    val_split: str,
    num_workers: int,
    storage: StorageConfig | None = None,
) -> dict[str, Any]:
    """Everything about the shards that would otherwise fail inside a worker; returns the manifest."""
    manifest = read_manifest(shard_root, storage)
    from posegpt.data.schema import SCHEMA_VERSION

    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ShardError(
            f"{join(shard_root, MANIFEST_FILE)} has schema version {version!r}, this code reads version "
            f"{SCHEMA_VERSION}: rewrite the shards with this version's jobs/prepare.py"
        )
    for task in tasks:
        rows = manifest_rows(manifest, task, train_split)
        files = list_files(shard_root, task, train_split, storage)
        if rows == 0 or not files:
            raise ShardError(
                f"task {task!r} has no {train_split} rows in {shard_root} (manifest count {rows}, "
                f"{len(files)} Parquet files); set data.task_ratio.{task}=0 to train without it"
            )
        if rows < num_workers:
            raise ShardError(
                f"task {task!r} has {rows} {train_split} rows, fewer than the {num_workers} training workers "
                "that each need a share"
            )
    for task in val_tasks:
        if (
            not list_files(shard_root, task, val_split, storage)
            or manifest_rows(manifest, task, val_split) == 0
        ):
            raise ShardError(
                f"validation task {task!r} has no {val_split} rows in {shard_root}; "
                f"remove it from validation.tasks or set validation.every=0"
            )
    return manifest


def open_datasets(
    shard_root: str,
    tasks: Sequence[str],
    split: str,
    read_cpus: float,
    storage: StorageConfig | None = None,
) -> dict[str, Any]:
    """One Ray Dataset per task over ``<root>/<task>/<split>/*.parquet`` (lazy: nothing read yet).

    The files are listed here, so the datasets read them through Ray Data's first Parquet
    datasource: the newer one lists them again in a task that reserves a whole CPU per dataset
    and epoch, which never starts while the training workers and encoding actors hold the rest.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    # A Dataset keeps a copy of the context it was made under: the setting stays with these datasets.
    v2, context.use_datasource_v2 = context.use_datasource_v2, False
    datasets = {}
    try:
        for task in tasks:
            fs, _ = arrow_filesystem(shard_root, storage)
            files = list_files(shard_root, task, split, storage)
            datasets[task] = ray.data.read_parquet(files, filesystem=fs, num_cpus=read_cpus)
    finally:
        context.use_datasource_v2 = v2
    return datasets


def read_rows(
    shard_root: str,
    task: str,
    split: str,
    limit: int,
    storage: StorageConfig | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a task and split, in file order, as dicts."""
    fs, _ = arrow_filesystem(shard_root, storage)
    rows: list[dict[str, Any]] = []
    for path in list_files(shard_root, task, split, storage):
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(batch_size=256, columns=list(columns) if columns else None):
                rows.extend(batch.to_pylist())
                if len(rows) >= limit:
                    return rows[:limit]
    return rows


def first_poses(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """(N, 72) the first pose of every row that has one."""
    poses = [np.asarray(r["poses"][0], dtype=np.float32) for r in rows if r.get("poses")]
    if not poses:
        return np.zeros((0, POSE_DIM), dtype=np.float32)
    return np.stack(poses).reshape(-1, POSE_DIM)
