"""The prepare job's logic: raw datasets → QA shards, manifest and rejects.

Readers (``pipelines.sources``) run on the driver and yield small work items in
a fixed order: sources in config order, each in its files' order. Items go to
Ray Data in chunks of ``chunk_items`` (``from_items`` → ``map_batches`` of
``pipelines.transforms.transform_batch`` with ``preserve_order``), and the
transformed batches stream back to the driver's ``ShardWriter``. So the driver
holds one chunk of items and one row group per open file, whatever the dataset
size, and the same inputs and seed give the same rows in the same files.
``engine="local"`` does the same work in a plain loop (tests, benchmarks).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.prepare_config import PrepareConfig, SourceConfig
from pipelines.sources import get_reader
from pipelines.sources.inputs import ReadContext, dataset_name
from pipelines.sources.items import Item
from pipelines.transforms import ITEM_COLUMN, TransformSettings, to_table, transform_batch, transform_item
from pipelines.writer import ShardWriter, prepare_output
from posegpt.config import to_dict
from posegpt.schema import SCHEMA_VERSION
from posegpt.storage import check_reachable, is_s3

REPO = Path(__file__).resolve().parent.parent
CODE_FILES: tuple[str, ...] = (
    "pipelines/prepare.py",
    "pipelines/prepare_config.py",
    "pipelines/transforms.py",
    "pipelines/writer.py",
    "posegpt/schema.py",
    "posegpt/templates.py",
    "posegpt/crops.py",
    "posegpt/geometry.py",
)
"""Files whose content defines the rows (with ``pipelines/sources/*.py``): their digest is the code version."""


class PrepareError(RuntimeError):
    """The job cannot run (missing input) or its result is not acceptable (too many rejects)."""


@dataclass
class PrepareResult:
    """What a prepare run wrote."""

    out: str
    manifest: dict[str, Any]
    per_input: dict[str, dict[str, int]]
    seconds: float
    rejects_uri: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def read(self) -> int:
        return sum(s["read"] for s in self.per_input.values())

    @property
    def accepted(self) -> int:
        return sum(s["accepted"] for s in self.per_input.values())

    @property
    def rejected(self) -> int:
        return sum(s["rejected"] for s in self.per_input.values())

    @property
    def reject_fraction(self) -> float:
        return self.rejected / self.read if self.read else 1.0

    def summary_line(self) -> str:
        parts = [
            f"{name} read={s['read']} accepted={s['accepted']} rejected={s['rejected']}"
            for name, s in self.per_input.items()
        ]
        total = f"total read={self.read} accepted={self.accepted} rejected={self.rejected}"
        return "prepare: " + "; ".join([*parts, total]) + f" ({self.seconds:.1f}s)"


def code_version() -> dict[str, str | None]:
    """The git commit (when run from a checkout) and a digest of the code that makes the rows."""
    digest = hashlib.sha256()
    files = [
        *CODE_FILES,
        *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "pipelines/sources").glob("*.py")),
    ]
    for rel in files:
        path = REPO / rel
        if path.is_file():
            digest.update(rel.encode() + b"\0" + path.read_bytes())
    commit = None
    if (REPO / ".git").exists():
        try:
            proc = subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            commit = proc.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"git_commit": commit, "code_digest": digest.hexdigest()[:16]}


def missing_inputs(cfg: PrepareConfig) -> list[str]:
    """Configured input paths (source paths, image roots, AMASS and PoseScript folders) that do not exist."""
    ctx = ReadContext(cfg.raw_root, cfg.storage)
    missing = []
    if cfg.raw_root and not ctx.exists(cfg.raw_root):
        return [f"raw_root {cfg.raw_root}"]
    for name, src in cfg.sources.items():
        if not src.enabled:
            continue
        for key in ("path", "image_root", "amass_root", "posescript"):
            value = getattr(src, key)
            if value and not ctx.exists(ctx.path(value)):
                missing.append(f"sources.{name}.{key} = {ctx.path(value)}")
    return missing


def iter_items(cfg: PrepareConfig, contexts: dict[str, ReadContext]) -> Iterator[Item]:
    """Every work item of every enabled source, in config order."""
    for name, src in cfg.sources.items():
        if not src.enabled:
            continue
        ctx = ReadContext(cfg.raw_root, cfg.storage, cfg.seed, cfg.all_captions)
        contexts[name] = ctx
        yield from get_reader(src.reader)(name, src, ctx)


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def run_local(
    items: Iterable[Item], settings: TransformSettings, write: Callable[[Any], None], batch: int
) -> None:
    """The transform in this process, one batch of items at a time."""
    for chunk in _chunks(items, batch):
        write(to_table([transform_item(item, settings) for item in chunk]))


def run_ray(
    items: Iterable[Item], settings: TransformSettings, write: Callable[[Any], None], cfg: PrepareConfig
) -> None:
    """The transform on Ray Data workers, chunk by chunk, results in input order."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        ray.init(address=cfg.ray_address or None, log_to_driver=False)
    data_ctx = DataContext.get_current()
    data_ctx.execution_options.preserve_order = True
    data_ctx.enable_progress_bars = cfg.progress_bars
    for chunk in _chunks(items, cfg.chunk_items):
        records = [{ITEM_COLUMN: json.dumps(item)} for item in chunk]
        blocks = max(1, math.ceil(len(records) / cfg.batch_size))
        ds = ray.data.from_items(records, override_num_blocks=blocks).map_batches(
            transform_batch,
            fn_kwargs={"settings": settings},
            batch_format="pyarrow",
            batch_size=cfg.batch_size,
            num_cpus=cfg.num_cpus_per_task,
        )
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=2):
            write(batch)


def transform_settings(cfg: PrepareConfig) -> TransformSettings:
    return TransformSettings(
        seed=cfg.seed,
        image_size=cfg.image_size,
        crop_padding=cfg.crop_padding,
        jpeg_quality=cfg.jpeg_quality,
        limits=cfg.image_limits,
        storage=cfg.storage,
        raw_root=cfg.raw_root.rstrip("/"),
    )


def _source_entry(
    name: str, src: SourceConfig, ctx: ReadContext | None, root: str, stats: dict[str, int]
) -> dict[str, Any]:
    prefix = root.rstrip("/") + "/" if root else ""
    files = {}
    for uri, digest in sorted((ctx.digests if ctx else {}).items()):
        files[uri[len(prefix) :] if prefix and uri.startswith(prefix) else uri] = digest
    return {
        "reader": src.reader,
        "path": src.path,
        "dataset": dataset_name(name, src),
        "files": files,
        "read": stats["read"],
        "accepted": stats["accepted"],
        "rejected": stats["rejected"],
    }


def prepare(cfg: PrepareConfig, code: dict[str, str | None] | None = None) -> PrepareResult:
    """Read every source, transform, validate and write the shards; raises PrepareError for missing inputs.

    The reject fraction is not checked here (the shards are complete either way):
    the job compares ``result.reject_fraction`` with ``cfg.max_reject_fraction``.
    """
    start = time.perf_counter()
    for uri in (cfg.raw_root, cfg.out):
        if uri and is_s3(uri):
            try:
                check_reachable(uri, cfg.storage)
            except ValueError as exc:
                raise PrepareError(str(exc)) from exc
    missing = missing_inputs(cfg)
    if missing:
        raise PrepareError("input paths do not exist: " + "; ".join(missing))
    prepare_output(cfg.out, cfg.storage, cfg.overwrite)
    writer = ShardWriter(cfg.out, cfg.storage, cfg.rows_per_file)
    settings = transform_settings(cfg)
    contexts: dict[str, ReadContext] = {}
    items = iter_items(cfg, contexts)
    try:
        if cfg.engine == "ray":
            run_ray(items, settings, writer.write, cfg)
        else:
            run_local(items, settings, writer.write, cfg.batch_size)
    finally:
        writer.close()
    per_input = {
        name: dict(writer.per_input.get(name, {"read": 0, "accepted": 0, "rejected": 0})) for name in contexts
    }
    counts = {task: dict(sorted(splits.items())) for task, splits in sorted(writer.counts.items())}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "counts": counts,
        "rows": sum(sum(s.values()) for s in counts.values()),
        "sources": {
            name: _source_entry(name, cfg.sources[name], contexts.get(name), cfg.raw_root, per_input[name])
            for name in contexts
        },
        "rejects": writer.rejected,
        "read": sum(s["read"] for s in per_input.values()),
        "code_version": code if code is not None else code_version(),
        "config": {
            k: v
            for k, v in to_dict(cfg).items()
            if k
            in (
                "seed",
                "image_size",
                "crop_padding",
                "jpeg_quality",
                "all_captions",
                "rows_per_file",
                "image_limits",
            )
        },
    }
    writer.write_manifest(manifest)
    rejects_uri = f"{cfg.out.rstrip('/')}/rejects"
    return PrepareResult(cfg.out, manifest, per_input, time.perf_counter() - start, rejects_uri)
