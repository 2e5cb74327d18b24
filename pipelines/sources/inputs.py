"""Reading raw files for the readers: path resolution, local or ``s3://``, and file digests.

Every raw file a reader opens goes through ``ReadContext``, which records its
SHA-256 for the manifest, so a shard folder names the exact inputs it was made from.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from pipelines.prepare_config import SourceConfig
from posegpt.storage import StorageConfig, arrow_filesystem, is_s3, join

NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)
"""What ``np.load`` raises for a truncated or corrupt archive."""


class RawFileError(ValueError):
    """A raw file that cannot be read or parsed; the message names the file."""


def resolve(root: str, path: str) -> str:
    """``path`` itself when absolute or ``s3://``, else joined to ``root``."""
    if not path:
        return root
    if is_s3(path) or PurePosixPath(path).is_absolute() or not root:
        return path
    return join(root, path)


@dataclass
class ReadContext:
    """What every reader gets: where relative paths start, the S3 endpoint, the seed, switches."""

    raw_root: str
    storage: StorageConfig = field(default_factory=StorageConfig)
    seed: int = 0
    all_captions: bool = False
    digests: dict[str, str] = field(default_factory=dict)
    """URI → SHA-256 of every raw file read (manifest ``sources``)."""

    def path(self, rel: str, base: str | None = None) -> str:
        return resolve(resolve(self.raw_root, base) if base else self.raw_root, rel)

    def exists(self, uri: str) -> bool:
        fs, p = arrow_filesystem(uri, self.storage)
        return fs.get_file_info(p).type != pafs.FileType.NotFound

    def is_dir(self, uri: str) -> bool:
        fs, p = arrow_filesystem(uri, self.storage)
        return fs.get_file_info(p).type == pafs.FileType.Directory

    def read(self, uri: str) -> bytes:
        """Bytes of a raw file (digest recorded); FileNotFoundError when it is missing."""
        fs, p = arrow_filesystem(uri, self.storage)
        if fs.get_file_info(p).type != pafs.FileType.File:
            raise FileNotFoundError(f"{uri} does not exist")
        with fs.open_input_stream(p) as f:
            data = f.read()
        self.digests[uri] = hashlib.sha256(data).hexdigest()
        return data

    def read_json(self, uri: str) -> Any:
        """Parsed JSON; RawFileError naming the file when it does not parse."""
        data = self.read(uri)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RawFileError(f"{uri} is not valid JSON: {exc}") from exc

    def read_npz(self, uri: str) -> dict[str, np.ndarray]:
        """Every array of an npz (loaded now, so a truncated archive fails here, naming the file)."""
        data = self.read(uri)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except NPZ_ERRORS as exc:
            raise RawFileError(f"{uri} is not a readable npz archive ({type(exc).__name__}: {exc})") from exc


def dataset_name(name: str, source: SourceConfig) -> str:
    return source.dataset or name
