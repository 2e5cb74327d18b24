"""Byte-reproducible files: npz archives, JSON and JPEG.

``numpy.savez`` stamps each archive member with the current time, so two runs
with the same seed would differ in bytes; ``write_npz`` fixes the timestamps.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """An uncompressed ``.npz`` (what ``np.load`` reads) with fixed member timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    return path


def write_json(path: Path, obj: Any, indent: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
    return path


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_jpeg(path: Path, image: np.ndarray, quality: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(image, quality))
    return path


def rounded(values: np.ndarray | list[float], digits: int = 6) -> list[Any]:
    """A nested list of floats rounded for JSON (stable text, no float noise)."""
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()
