"""The shard writer, run by the workers: ``<out>/<task>/<split>/part-*.parquet``, ``rejects/``, and statistics.

``ShardSink`` is a Ray Data ``Datasink``: each write task routes the transformed
rows it gets to their task and split (rejects to ``rejects/``) and writes Parquet
straight to the output, local or ``s3://``, through the process's cached pyarrow
filesystem. A file holds the rows of one read part, at most ``rows_per_file``, and
is named after the part and its first row (``part-<part>-<first item>.parquet``),
so a retried task rewrites the same names instead of adding duplicates. Local
files are written under a temporary name and renamed when complete; an S3 object
appears only when its upload completes. Each write task returns its statistics
(read / accepted / rejected per input, rows per task and split, the raw files'
digests, the files it wrote and on which node); ``on_write_complete`` adds them up
on the driver, which writes ``manifest.json`` last.

Output folder states (``prepare_output``): a folder with ``manifest.json`` holds a
finished job (replaced only with ``overwrite``); a folder with this job's start
marker but no manifest holds a run that did not finish, and is cleared so the new
run starts clean (never a mix of two runs); anything else of ours present without
the marker is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.datasource import Datasink, WriteResult

from pipelines.transforms import (
    DIGESTS_COLUMN,
    FILE_COLUMN,
    INPUT_COLUMN,
    PART_COLUMN,
    REASON_COLUMN,
    SEQ_COLUMN,
    VARIANT_COLUMN,
)
from posegpt.data.schema import QA_SCHEMA, REJECT_SCHEMA, TASKS
from posegpt.storage import StorageConfig, arrow_filesystem, is_s3

MANIFEST_FILE = "manifest.json"
STARTED_FILE = "_prepare_started.json"
"""Written first by a run; with no manifest beside it, the run did not finish."""
REJECTS_DIR = "rejects"
TMP_PREFIX = ".tmp-"


class OutputExistsError(FileExistsError):
    """The output folder already holds shards and ``overwrite`` is off."""


def _delete(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
    else:
        fs.delete_file(path)


def prepare_output(out: str, storage: StorageConfig, overwrite: bool, started: dict[str, Any]) -> str | None:
    """Check (and with ``overwrite``, or after an unfinished run, clear) the parts of ``out`` this job writes.

    Writes the start marker. Returns a note when an unfinished run was cleared, else None.
    """
    fs, root = arrow_filesystem(out, storage)
    ours = [*TASKS, REJECTS_DIR, MANIFEST_FILE, STARTED_FILE]
    present = [n for n in ours if fs.get_file_info(f"{root}/{n}").type != pafs.FileType.NotFound]
    unfinished = STARTED_FILE in present and MANIFEST_FILE not in present
    if present and not overwrite and not unfinished:
        raise OutputExistsError(
            f"{out} already holds {', '.join(present)}; pass overwrite=true to replace them or choose another out"
        )
    for name in present:
        _delete(fs, f"{root}/{name}")
    if not is_s3(out):
        fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{STARTED_FILE}") as f:
        f.write((json.dumps(started, indent=2, sort_keys=True) + "\n").encode())
    if unfinished:
        return f"{out} held an unfinished run (no {MANIFEST_FILE}): cleared, starting clean"
    return None


def empty_stats() -> dict[str, Any]:
    return {"per_input": {}, "counts": {}, "rejects": 0, "digests": {}, "files": []}


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> None:
    """Add one write task's statistics to ``total`` (both as ``empty_stats`` makes them)."""
    for name, stats in part["per_input"].items():
        mine = total["per_input"].setdefault(name, {"read": 0, "accepted": 0, "rejected": 0})
        for key, value in stats.items():
            mine[key] += value
    for task, splits in part["counts"].items():
        for split, value in splits.items():
            total["counts"].setdefault(task, {}).setdefault(split, 0)
            total["counts"][task][split] += value
    total["rejects"] += part["rejects"]
    for name, digests in part["digests"].items():
        total["digests"].setdefault(name, {}).update(digests)
    total["files"].extend(part["files"])


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


class _Stream:
    """The files of one read part in one folder: ``part-<part>-<first seq>.parquet``, ``rows_per_file`` each."""

    def __init__(
        self, fs: pafs.FileSystem, folder: str, schema: pa.Schema, part: int, rows_per_file: int
    ) -> None:
        self.fs, self.folder, self.schema, self.part, self.rows_per_file = (
            fs,
            folder,
            schema,
            part,
            rows_per_file,
        )
        self.s3 = isinstance(fs, pafs.S3FileSystem)
        self.written: list[tuple[str, int]] = []
        self._writer: pq.ParquetWriter | None = None
        self._path = self._tmp = ""
        self._in_file = 0

    def _open(self, first_seq: int) -> None:
        name = f"part-{self.part:05d}-{first_seq:08d}"
        # Template variants share their item's seq: a file may start inside the item its predecessor began.
        clash = sum(1 for path, _ in self.written if path.rsplit("/", 1)[-1].startswith(name))
        self._path = f"{self.folder}/{name}{f'-{clash}' if clash else ''}.parquet"
        if not self.s3:
            self.fs.create_dir(self.folder, recursive=True)
        # Local files appear under their name only once complete; S3 objects only when the upload completes.
        self._tmp = self._path if self.s3 else f"{self.folder}/{TMP_PREFIX}{uuid.uuid4().hex}.parquet.tmp"
        self._writer = pq.ParquetWriter(self._tmp, self.schema, filesystem=self.fs)

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        if self._tmp != self._path:
            self.fs.move(self._tmp, self._path)
        self.written.append((self._path, self._in_file))
        self._writer, self._in_file = None, 0

    def write(self, table: pa.Table, seqs: list[int]) -> None:
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open(seqs[start])
            take = min(table.num_rows - start, self.rows_per_file - self._in_file)
            assert self._writer is not None
            self._writer.write_table(table.slice(start, take))
            self._in_file += take
            start += take
            if self._in_file >= self.rows_per_file:
                self._close_file()

    def close(self) -> None:
        self._close_file()


class ShardSink(Datasink[dict]):
    """Writes transformed blocks (``pipelines.transforms.OUTPUT_SCHEMA``) as shards and rejects; counts them."""

    def __init__(self, out: str, storage: StorageConfig, rows_per_file: int) -> None:
        self.out = out
        self.storage = storage
        self.rows_per_file = rows_per_file
        self.totals: dict[str, Any] = empty_stats()
        """Every write task's statistics added up (filled by ``on_write_complete``)."""

    def get_name(self) -> str:
        return "Shards"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        from ray.data.block import BlockAccessor

        return self.write_blocks(BlockAccessor.for_block(b).to_arrow() for b in blocks)

    def write_blocks(self, blocks: Iterable[pa.Table]) -> dict[str, Any]:
        """Write blocks in their order; returns this call's statistics (``empty_stats`` layout)."""
        fs, root = arrow_filesystem(self.out, self.storage)
        stats = empty_stats()
        streams: dict[tuple[int, str], _Stream] = {}

        def stream(part: int, folder: str, schema: pa.Schema) -> _Stream:
            key = (part, folder)
            if key not in streams:
                streams[key] = _Stream(fs, f"{root}/{folder}", schema, part, self.rows_per_file)
            return streams[key]

        for table in blocks:
            if table.num_rows == 0:
                continue
            for text in table.column(DIGESTS_COLUMN).drop_null().to_pylist():
                for name, digests in json.loads(text).items():
                    stats["digests"].setdefault(name, {}).update(digests)
            table = table.filter(pc.is_valid(table.column(INPUT_COLUMN)))
            if table.num_rows == 0:
                continue
            rejected = pc.is_valid(table.column(REASON_COLUMN))
            # An item counts once, whatever number of template variants it became.
            first = [v is None or v == 0 for v in table.column(VARIANT_COLUMN).to_pylist()]
            for name, bad, count in zip(
                table.column(INPUT_COLUMN).to_pylist(), rejected.to_pylist(), first, strict=True
            ):
                if not count:
                    continue
                mine = stats["per_input"].setdefault(name, {"read": 0, "accepted": 0, "rejected": 0})
                mine["read"] += 1
                mine["rejected" if bad else "accepted"] += 1
            parts = table.column(PART_COLUMN).to_pylist()
            seqs = table.column(SEQ_COLUMN).to_pylist()
            keys = [
                (p, REJECTS_DIR) if bad else (p, f"{task}/{split}")
                for p, bad, task, split in zip(
                    parts,
                    rejected.to_pylist(),
                    table.column("task").to_pylist(),
                    table.column("split").to_pylist(),
                    strict=True,
                )
            ]
            # Consecutive runs of one part and folder keep the readers' order within each file.
            start = 0
            for i in range(1, len(keys) + 1):
                if i < len(keys) and keys[i] == keys[start]:
                    continue
                part, folder = keys[start]
                piece = table.slice(start, i - start)
                if folder == REJECTS_DIR:
                    rows = pa.table(
                        {
                            "sample_id": piece.column("sample_id"),
                            "source": piece.column("source"),
                            "file": piece.column(FILE_COLUMN),
                            "reason": piece.column(REASON_COLUMN),
                            "meta": piece.column("meta"),
                        },
                        schema=REJECT_SCHEMA,
                    )
                    stats["rejects"] += rows.num_rows
                    stream(part, folder, REJECT_SCHEMA).write(rows, seqs[start:i])
                else:
                    task, split = folder.split("/")
                    rows = piece.select(QA_SCHEMA.names).cast(QA_SCHEMA)
                    stats["counts"].setdefault(task, {}).setdefault(split, 0)
                    stats["counts"][task][split] += rows.num_rows
                    stream(part, folder, QA_SCHEMA).write(rows, seqs[start:i])
                start = i
        node = _node_id()
        prefix = root.rstrip("/") + "/"
        for s in streams.values():
            s.close()
            stats["files"].extend([p.removeprefix(prefix), n, node] for p, n in s.written)
        return stats

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        for part in write_result.write_returns:
            merge_stats(self.totals, part)

    def finish(self, manifest: dict[str, Any]) -> None:
        """Remove what killed attempts left behind, then write the manifest (the mark of a finished job)."""
        fs, root = arrow_filesystem(self.out, self.storage)
        if not is_s3(self.out):
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            for info in infos:
                if info.type == pafs.FileType.File and info.base_name.startswith(TMP_PREFIX):
                    fs.delete_file(info.path)
        with fs.open_output_stream(f"{root}/{MANIFEST_FILE}") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
