"""The shard writer: ``<out>/<task>/<split>/part-*.parquet``, ``rejects/part-*.parquet``, ``manifest.json``.

Records arrive in their final order (the prepare job preserves the readers'
order); the writer routes each to its task and split, starts a new file every
``rows_per_file`` rows, and keeps at most one row group per open file in memory,
so its memory does not grow with the dataset. Local folders and ``s3://``
prefixes go through pyarrow's filesystems.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.transforms import FILE_COLUMN, INPUT_COLUMN, REASON_COLUMN
from posegpt.schema import QA_SCHEMA, REJECT_SCHEMA, TASKS
from posegpt.storage import StorageConfig, arrow_filesystem, is_s3

MANIFEST_FILE = "manifest.json"
REJECTS_DIR = "rejects"
ROW_GROUP_ROWS = 256
"""Rows buffered per open file before they are written as one row group."""


class OutputExistsError(FileExistsError):
    """The output folder already holds shards and ``overwrite`` is off."""


def prepare_output(out: str, storage: StorageConfig, overwrite: bool) -> None:
    """Check (and with ``overwrite``, clear) the parts of ``out`` this job writes."""
    fs, root = arrow_filesystem(out, storage)
    ours = [*TASKS, REJECTS_DIR, MANIFEST_FILE]
    present = [n for n in ours if fs.get_file_info(f"{root}/{n}").type != pafs.FileType.NotFound]
    if present and not overwrite:
        raise OutputExistsError(
            f"{out} already holds {', '.join(present)}; pass overwrite=true to replace them or choose another out"
        )
    for name in present:
        path = f"{root}/{name}"
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)
        else:
            fs.delete_file(path)
    if not is_s3(out):
        fs.create_dir(root, recursive=True)


class _PartWriter:
    """Files ``<folder>/part-00000.parquet``, ... of one schema, ``rows_per_file`` rows each."""

    def __init__(self, fs: pafs.FileSystem, folder: str, schema: pa.Schema, rows_per_file: int) -> None:
        self.fs, self.folder, self.schema, self.rows_per_file = fs, folder, schema, rows_per_file
        self.files: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_file = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0

    def _flush(self) -> None:
        if not self._buffered:
            return
        if self._writer is None:
            path = f"{self.folder}/part-{len(self.files):05d}.parquet"
            self.fs.create_dir(self.folder, recursive=True)
            self._writer = pq.ParquetWriter(path, self.schema, filesystem=self.fs)
            self.files.append(path)
        self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=self._buffered)
        self._buffer, self._buffered = [], 0

    def _close_file(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
        self._writer, self._in_file = None, 0

    def write(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            take = min(table.num_rows - start, self.rows_per_file - self._in_file)
            self._buffer.append(table.slice(start, take))
            self._buffered += take
            self._in_file += take
            self.rows += take
            start += take
            if self._in_file >= self.rows_per_file:
                self._close_file()
            elif self._buffered >= ROW_GROUP_ROWS:
                self._flush()

    def close(self) -> None:
        self._close_file()


class ShardWriter:
    """Routes transformed records to task/split shards and rejects; counts everything it writes."""

    def __init__(self, out: str, storage: StorageConfig, rows_per_file: int) -> None:
        self.out = out
        self.fs, self.root = arrow_filesystem(out, storage)
        self.rows_per_file = rows_per_file
        self._parts: dict[tuple[str, str], _PartWriter] = {}
        self._rejects = _PartWriter(self.fs, f"{self.root}/{REJECTS_DIR}", REJECT_SCHEMA, rows_per_file)
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        """task → split → rows written."""
        self.per_input: dict[str, dict[str, int]] = defaultdict(
            lambda: {"read": 0, "accepted": 0, "rejected": 0}
        )
        """input name → read / accepted / rejected."""

    def write(self, table: pa.Table) -> None:
        """One batch of transformed records (``pipelines.transforms.OUTPUT_SCHEMA``), in order."""
        if table.num_rows == 0:
            return
        rejected = pc.is_valid(table.column(REASON_COLUMN))
        inputs = table.column(INPUT_COLUMN).to_pylist()
        flags = rejected.to_pylist()
        for name, bad in zip(inputs, flags, strict=True):
            stats = self.per_input[name]
            stats["read"] += 1
            stats["rejected" if bad else "accepted"] += 1
        rejects = table.filter(rejected)
        if rejects.num_rows:
            self._rejects.write(
                pa.table(
                    {
                        "sample_id": rejects.column("sample_id"),
                        "source": rejects.column("source"),
                        "file": rejects.column(FILE_COLUMN),
                        "reason": rejects.column(REASON_COLUMN),
                        "meta": rejects.column("meta"),
                    },
                    schema=REJECT_SCHEMA,
                )
            )
        rows = table.filter(pc.invert(rejected)).select(QA_SCHEMA.names).cast(QA_SCHEMA)
        if not rows.num_rows:
            return
        keys = list(zip(rows.column("task").to_pylist(), rows.column("split").to_pylist(), strict=True))
        # Consecutive runs of one task/split keep the order within each shard.
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                task, split = keys[start]
                part = self._parts.get((task, split))
                if part is None:
                    part = _PartWriter(self.fs, f"{self.root}/{task}/{split}", QA_SCHEMA, self.rows_per_file)
                    self._parts[(task, split)] = part
                part.write(rows.slice(start, i - start))
                self.counts[task][split] += i - start
                start = i

    @property
    def rejected(self) -> int:
        return self._rejects.rows

    def close(self) -> None:
        for part in self._parts.values():
            part.close()
        self._rejects.close()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        with self.fs.open_output_stream(f"{self.root}/{MANIFEST_FILE}") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
