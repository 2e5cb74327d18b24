"""Reading raw files for the readers: path resolution, local or ``s3://``, and file digests.

Every raw file a reader opens goes through ``ReadContext``, which records its
SHA-256 for the manifest, so a shard folder names the exact inputs it was made from.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from pipelines.prepare_config import SourceConfig
from pipelines.sources.safe_pickle import UnsafePickleError, restricted_load
from posegpt.storage import StorageConfig, arrow_filesystem, is_s3, join, read_object

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
        data = read_object(fs, p, uri, self.storage.max_attempts)
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
        return load_npz(self.read(uri), uri)


def _read_member(member: Any) -> np.ndarray:
    version = np.lib.format.read_magic(member)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = header(member)
    if not dtype.hasobject:
        array = np.frombuffer(member.read(), dtype=dtype)
        count = int(np.prod(shape))
        if array.size != count:
            raise ValueError(f"expected {count} values of {dtype}, found {array.size}")
        return array.reshape(shape, order="F" if fortran else "C")
    # numpy stores an object array as one pickle of the array: read it without running code.
    array = restricted_load(member)
    if not isinstance(array, np.ndarray):
        raise ValueError(f"object member holds a {type(array).__name__}, not an array")
    return array


def load_npz(data: bytes, uri: str) -> dict[str, np.ndarray]:
    """The arrays of an npz archive; object arrays through the restricted unpickler.

    RawFileError naming the file (and member) for a truncated or corrupt archive or
    a pickle that refers to anything but numpy data.
    """
    arrays: dict[str, np.ndarray] = {}
    name = ""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    arrays[name.removesuffix(".npy")] = _read_member(member)
    except UnsafePickleError as exc:
        raise RawFileError(f"{uri}: member {name} refused: {exc}") from exc
    except (*NPZ_ERRORS, pickle.UnpicklingError) as exc:
        raise RawFileError(f"{uri} is not a readable npz archive ({type(exc).__name__}: {exc})") from exc
    return arrays


def npz_length(uri: str, storage: StorageConfig, key: str = "imgname") -> int | None:
    """Rows of one array of an npz, from its header alone (the archive's directory + a few bytes)."""
    fs, path = arrow_filesystem(uri, storage)
    try:
        with fs.open_input_file(path) as f, zipfile.ZipFile(f) as archive, archive.open(f"{key}.npy") as m:
            version = np.lib.format.read_magic(m)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape = read(m)[0]
    except (*NPZ_ERRORS, FileNotFoundError):
        return None
    return int(shape[0]) if shape else None


def dataset_name(name: str, source: SourceConfig) -> str:
    return source.dataset or name
