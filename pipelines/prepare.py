"""The prepare job's logic: raw datasets → QA shards, manifest and rejects, on Ray Data workers.

The driver only plans: for each enabled source it lists the parts to read
(``pipelines.sources.plan_source``: row ranges of npz files, tar shards, every k-th
entry of JSON-indexed sources). Everything else runs in Ray Data tasks:

    read_datasource(PartsDatasource)   one read task per part: the reader → item blocks
      .map_batches(transform_batch)    image read + crop / encode, templates, validation
      .write_datasink(ShardSink)       Parquet per task/split and rejects, straight to ``out``

Ray fuses the three steps into one task per part, so an item travels from its raw
file to its shard inside one worker. Each write task returns its counts and the
raw files' digests; the driver adds them up and writes ``manifest.json`` last,
so a folder without a manifest is an unfinished job (see ``pipelines.writer``).
``engine="local"`` runs the same parts through the same functions in this process.
Tasks that die (a killed worker, a lost node) are retried by Ray core (its default of
3 retries); a retried part rewrites the same file names, so counts and rows never double.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.prepare_config import PrepareConfig, SourceConfig
from pipelines.sources import get_reader, plan_source
from pipelines.sources.inputs import ReadContext, dataset_name
from pipelines.transforms import (
    DIGESTS_COLUMN,
    IMAGE_COLUMN,
    ITEM_COLUMN,
    ITEM_SCHEMA,
    PART_COLUMN,
    SEQ_COLUMN,
    TransformSettings,
    transform_batch,
)
from pipelines.writer import ShardSink, prepare_output
from posegpt.config import to_dict
from posegpt.data.schema import SCHEMA_VERSION
from posegpt.storage import check_reachable, is_s3

REPO = Path(__file__).resolve().parent.parent
CODE_FILES: tuple[str, ...] = (
    "pipelines/prepare.py",
    "pipelines/prepare_config.py",
    "pipelines/transforms.py",
    "pipelines/writer.py",
    "posegpt/data/schema.py",
    "posegpt/data/templates.py",
    "posegpt/data/crops.py",
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
            if not value:
                continue
            uri = ctx.path(value)
            # A shard pattern ({000000..000017}.tar) is checked by its folder; a missing shard is a reject.
            where = uri.rsplit("/", 1)[0] if src.reader == "hmr2_tar" and "{" in uri else uri
            if not ctx.exists(where):
                missing.append(f"sources.{name}.{key} = {uri}")
    return missing


@dataclass(frozen=True)
class Part:
    """One read task: a share of one source (see ``pipelines.sources.plan_source``)."""

    index: int
    input: str
    spec: dict[str, Any]


def plan(cfg: PrepareConfig) -> list[Part]:
    """Every part of every enabled source, in config order (the driver's only reading: listings, npz headers)."""
    ctx = ReadContext(cfg.raw_root, cfg.storage, cfg.seed, cfg.all_captions)
    parts: list[Part] = []
    for name, src in cfg.sources.items():
        if src.enabled:
            for spec in plan_source(name, src, ctx, cfg.rows_per_read_task, cfg.read_tasks_per_source):
                parts.append(Part(len(parts), name, spec))
    return parts


def read_part(cfg: PrepareConfig, part: Part) -> Iterator[pa.Table]:
    """The item blocks of one part (runs in a read task): ``batch_size`` items each, then a digest marker."""
    src = cfg.sources[part.input]
    ctx = ReadContext(cfg.raw_root, cfg.storage, cfg.seed, cfg.all_captions)
    columns: dict[str, list[Any]] = {n: [] for n in ITEM_SCHEMA.names}
    seq = 0

    def block() -> pa.Table:
        table = pa.table(columns, schema=ITEM_SCHEMA)
        for values in columns.values():
            values.clear()
        return table

    for item in get_reader(src.reader)(part.input, src, ctx, part.spec):
        image = item.get("image")
        data = image.pop("data", None) if isinstance(image, dict) else None
        columns[ITEM_COLUMN].append(json.dumps(item))
        columns[IMAGE_COLUMN].append(data)
        columns[PART_COLUMN].append(part.index)
        columns[SEQ_COLUMN].append(seq)
        columns[DIGESTS_COLUMN].append(None)
        seq += 1
        if len(columns[ITEM_COLUMN]) >= cfg.batch_size:
            yield block()
    # The closing marker carries the digests of every raw file this part read.
    for key, value in (
        (ITEM_COLUMN, None),
        (IMAGE_COLUMN, None),
        (PART_COLUMN, part.index),
        (SEQ_COLUMN, seq),
    ):
        columns[key].append(value)
    columns[DIGESTS_COLUMN].append(json.dumps({part.input: ctx.digests}, sort_keys=True))
    yield block()


def make_datasource(cfg: PrepareConfig, parts: list[Part]) -> Any:
    """A Ray Data ``Datasource`` with one read task per part."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class PartsDatasource(Datasource):
        def get_name(self) -> str:
            return "PrepareParts"

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[ReadTask]:
            return [
                ReadTask(
                    functools.partial(read_part, cfg, part),
                    BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None),
                    schema=ITEM_SCHEMA,
                )
                for part in parts
            ]

    return PartsDatasource()


def run_local(cfg: PrepareConfig, parts: list[Part], sink: ShardSink, settings: TransformSettings) -> None:
    """The same parts, transform and writer in this process, one part after another."""
    from ray.data.datasource import WriteResult

    returns = [
        sink.write_blocks(transform_batch(block, settings) for block in read_part(cfg, part))
        for part in parts
    ]
    sink.on_write_complete(WriteResult(num_rows=0, size_bytes=0, write_returns=returns))


def run_ray(cfg: PrepareConfig, parts: list[Part], sink: ShardSink, settings: TransformSettings) -> None:
    """Read, transform and write on Ray Data workers; the driver waits for the write statistics."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        # Worker output and errors reach this log (log_to_driver stays on).
        ray.init(address=cfg.ray_address or None)
    DataContext.get_current().enable_progress_bars = cfg.progress_bars
    # Equal resources let Ray fuse the three steps into one task per part. A task whose worker or node
    # died is run again by Ray core (3 retries by default for tasks, which Ray Data keeps).
    ds = ray.data.read_datasource(
        make_datasource(cfg, parts), override_num_blocks=len(parts), num_cpus=cfg.num_cpus_per_task
    ).map_batches(
        transform_batch,
        fn_kwargs={"settings": settings},
        batch_format="pyarrow",
        batch_size=None,
        zero_copy_batch=True,
        num_cpus=cfg.num_cpus_per_task,
    )
    ds.write_datasink(sink, ray_remote_args={"num_cpus": cfg.num_cpus_per_task})


def transform_settings(cfg: PrepareConfig) -> TransformSettings:
    return TransformSettings(
        seed=cfg.seed,
        image_size=cfg.image_size,
        crop_padding=cfg.crop_padding,
        jpeg_quality=cfg.jpeg_quality,
        limits=cfg.image_limits,
        storage=cfg.storage,
        raw_root=cfg.raw_root.rstrip("/"),
        templates=cfg.templates,
    )


def _source_entry(
    name: str, src: SourceConfig, digests: dict[str, str], root: str, stats: dict[str, int], parts: int
) -> dict[str, Any]:
    """One source in the manifest: its raw files (relative to ``root``) with their digests, and its counts."""
    prefix = root.rstrip("/") + "/" if root else ""
    files = {}
    for uri, digest in sorted(digests.items()):
        files[uri[len(prefix) :] if prefix and uri.startswith(prefix) else uri] = digest
    return {
        "reader": src.reader,
        "path": src.path,
        "dataset": dataset_name(name, src),
        "files": files,
        "read": stats["read"],
        "accepted": stats["accepted"],
        "rejected": stats["rejected"],
        "parts": parts,
    }


def prepare(cfg: PrepareConfig, code: dict[str, str | None] | None = None) -> PrepareResult:
    """Plan, read, transform, validate and write the shards; raises PrepareError for missing inputs.

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
    code = code if code is not None else code_version()
    note = prepare_output(cfg.out, cfg.storage, cfg.overwrite, {"code_version": code, "config": to_dict(cfg)})
    if note:
        print(f"prepare: {note}", flush=True)
    parts = plan(cfg)
    sink = ShardSink(cfg.out, cfg.storage, cfg.rows_per_file)
    settings = transform_settings(cfg)
    if cfg.engine == "ray":
        run_ray(cfg, parts, sink, settings)
    else:
        run_local(cfg, parts, sink, settings)
    totals = sink.totals
    names = [name for name, src in cfg.sources.items() if src.enabled]
    per_input = {
        name: dict(totals["per_input"].get(name, {"read": 0, "accepted": 0, "rejected": 0})) for name in names
    }
    counts = {task: dict(sorted(splits.items())) for task, splits in sorted(totals["counts"].items())}
    parts_per_input = {name: sum(1 for p in parts if p.input == name) for name in names}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "counts": counts,
        "rows": sum(sum(s.values()) for s in counts.values()),
        "sources": {
            name: _source_entry(
                name,
                cfg.sources[name],
                totals["digests"].get(name, {}),
                cfg.raw_root,
                per_input[name],
                parts_per_input[name],
            )
            for name in names
        },
        "rejects": totals["rejects"],
        "read": sum(s["read"] for s in per_input.values()),
        "code_version": code,
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
                "templates",
                "rows_per_file",
                "image_limits",
            )
        },
    }
    sink.finish(manifest)
    rejects_uri = f"{cfg.out.rstrip('/')}/rejects"
    files = sorted(totals["files"])
    return PrepareResult(
        cfg.out,
        manifest,
        per_input,
        time.perf_counter() - start,
        rejects_uri,
        {"files": files, "parts": len(parts)},
    )
