"""Image datasets with SMPL (pseudo) ground truth: SPIN-style and HMR2-style npz → ``image2pose`` items.

SPIN npz: ``imgname``, ``center`` (N,2), ``scale`` (N,) = box side / 200, ``pose``
(N,72), ``shape`` (N,10), optional ``has_smpl``. HMR2 npz: ``imgname``, ``center``,
``scale`` in pixels ((N,) or (N,2) [w, h]: the longer side is used), ``body_pose``
(N,72), ``has_body_pose``, ``betas``, ``has_betas``. Poses are in the camera frame
already. Image paths are relative to ``image_root`` (default: the npz's folder).
A row without pose ground truth becomes a reject naming the file, row and image.

HMR 2.0's loader quirks are kept: image names stored as byte strings are decoded
(UTF-8), and an optional pickled ``extra_info`` object array is read through
``pipelines.sources.safe_pickle`` (a pickle that refers to anything but numpy data
rejects the file, and nothing of it runs); its plain scalar entries go to ``meta``.

The job reads a file in row ranges (``plan``: one part per ``rows_per_part`` rows,
counted from the ``imgname`` header alone), each range in its own Ray task.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import RawFileError, ReadContext, dataset_name, npz_length, resolve
from pipelines.sources.items import Item, as_floats, reject_item, row_item, shape_floats
from posegpt.body.skeleton import POSE_DIM

SPIN_BOX_UNIT = 200.0
"""SPIN's ``scale`` is the box side in units of 200 pixels."""


@dataclass(frozen=True)
class NpzFormat:
    """Key names and scale unit of one npz flavour."""

    name: str
    pose_key: str
    has_pose_key: str
    betas_key: str
    has_betas_key: str | None
    scale_unit: float
    """Pixels per unit of ``scale``."""


SPIN = NpzFormat("spin", "pose", "has_smpl", "shape", None, SPIN_BOX_UNIT)
HMR2 = NpzFormat("hmr2", "body_pose", "has_body_pose", "betas", "has_betas", 1.0)
FORMATS = {"spin": SPIN, "hmr2": HMR2}


def npz_files(source: SourceConfig, ctx: ReadContext) -> list[tuple[str, str]]:
    """[(npz URI, split)]: ``path`` itself (split from ``split`` or the file name), or ``<path>/<split>.npz``."""
    path = ctx.path(source.path)
    if path.endswith(".npz"):
        stem = PurePosixPath(path).stem
        split = source.split or next(
            (s for s in source.splits if s == stem or stem.endswith(f"_{s}")), "train"
        )
        return [(path, split)]
    return [(resolve(path, f"{split}.npz"), split) for split in source.splits]


def parent(uri: str) -> str:
    """The folder of a path or ``s3://`` URI (PurePosixPath would fold ``s3://`` into ``s3:/``)."""
    return uri.rstrip("/").rsplit("/", 1)[0]


def box_size(scale: np.ndarray, unit: float) -> float:
    """Box side in pixels from one row's ``scale`` ((), (1,) or (2,) [w, h] → the longer side)."""
    values = np.asarray(scale, dtype=np.float64).reshape(-1)
    return float(values.max()) * unit


def image_name(value: object) -> str:
    """An ``imgname`` entry as text (HMR 2.0 stores some as byte strings)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def plain_extra(value: object) -> dict[str, object] | None:
    """The JSON-able scalar entries of one ``extra_info`` dict (arrays and nested objects left out)."""
    if not isinstance(value, dict):
        return None
    out: dict[str, object] = {}
    for key, item in value.items():
        if isinstance(item, np.generic):
            item = item.item()
        if isinstance(item, (bool, int, float, str)):
            out[str(key)] = item
    return out


def read_npz_rows(
    name: str,
    source: SourceConfig,
    ctx: ReadContext,
    fmt: NpzFormat,
    uri: str,
    split: str,
    rows: tuple[int, int] | None = None,
) -> Iterator[Item]:
    dataset = dataset_name(name, source)
    # A problem with the whole file is reported once, by the part that starts at row 0.
    owns_file = rows is None or rows[0] == 0
    try:
        arrays = ctx.read_npz(uri)
        for key in ("imgname", "center", "scale", fmt.pose_key):
            if key not in arrays:
                raise RawFileError(f"{uri} has no {key!r} array (keys: {sorted(arrays)})")
    except (RawFileError, FileNotFoundError) as exc:
        if owns_file:
            yield reject_item(name, dataset, uri, f"{fmt.name} npz: {exc}")
        return
    names = arrays["imgname"]
    n = len(names)
    lengths = {k: len(arrays[k]) for k in ("center", "scale", fmt.pose_key) if arrays[k].ndim > 0}
    if any(v != n for v in lengths.values()):
        if owns_file:
            yield reject_item(
                name, dataset, uri, f"{uri}: arrays have different lengths ({lengths}, imgname {n})"
            )
        return
    has_pose = arrays.get(fmt.has_pose_key)
    betas = arrays.get(fmt.betas_key)
    has_betas = arrays.get(fmt.has_betas_key) if fmt.has_betas_key else None
    extra = arrays.get("extra_info")
    image_root = ctx.path(source.image_root) if source.image_root else parent(uri)
    first, stop = rows if rows is not None else (0, n)
    for i in range(first, min(stop, n)):
        imgname = image_name(names[i])
        sid = f"{dataset}:{name}/{imgname}:{i}"
        center = np.asarray(arrays["center"][i], dtype=np.float64).reshape(-1)
        meta: dict[str, object] = {"file": uri, "index": i, "imgname": imgname, "format": fmt.name}
        if extra is not None and extra.ndim == 1 and len(extra) == n:
            info = plain_extra(extra[i])
            if info:
                meta["extra_info"] = info
        if has_pose is not None and not float(np.asarray(has_pose[i]).reshape(-1)[0]) > 0:
            yield reject_item(
                name,
                dataset,
                uri,
                f"no SMPL ground truth ({fmt.has_pose_key}=0) for {imgname}, row {i} of {uri}",
                sid,
                meta,
            )
            continue
        pose = np.asarray(arrays[fmt.pose_key][i], dtype=np.float64).reshape(-1)
        size = box_size(arrays["scale"][i], fmt.scale_unit)
        if center.shape != (2,) or not np.isfinite(center).all() or not np.isfinite(size) or size <= 0:
            yield reject_item(
                name,
                dataset,
                uri,
                f"bad box (center {center.tolist()}, size {size}) for {imgname}, row {i} of {uri}",
                sid,
                meta,
            )
            continue
        if pose.shape != (POSE_DIM,):
            yield reject_item(
                name,
                dataset,
                uri,
                f"pose of row {i} of {uri} has {pose.size} values, expected {POSE_DIM}",
                sid,
                meta,
            )
            continue
        row_betas = shape_floats(
            None if betas is None else betas[i], None if has_betas is None else has_betas[i]
        )
        meta.update(center=[float(c) for c in center], box_size=size)
        yield row_item(
            name,
            sid,
            "image2pose",
            dataset,
            split,
            uri,
            image={"uri": resolve(image_root, imgname), "crop": [float(center[0]), float(center[1]), size]},
            poses=[as_floats(pose)],
            betas=row_betas,
            meta=meta,
        )


def plan(name: str, source: SourceConfig, ctx: ReadContext, rows_per_part: int) -> list[dict]:
    """Parts of the job: ``{"file", "split", "rows": [first, stop]}`` per range of each npz file.

    A file whose header cannot be read is one part without a range (its reader rejects it, naming why).
    """
    parts: list[dict] = []
    for uri, split in npz_files(source, ctx):
        n = npz_length(uri, ctx.storage)
        if n is None:
            parts.append({"file": uri, "split": split, "rows": None})
            continue
        for first in range(0, max(n, 1), rows_per_part):
            parts.append({"file": uri, "split": split, "rows": [first, min(first + rows_per_part, n)]})
    return parts


def read_format(
    fmt: NpzFormat, name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None
) -> Iterator[Item]:
    if part is not None:
        rows = part.get("rows")
        yield from read_npz_rows(
            name, source, ctx, fmt, part["file"], part["split"], tuple(rows) if rows else None
        )
        return
    for uri, split in npz_files(source, ctx):
        yield from read_npz_rows(name, source, ctx, fmt, uri, split)


def read_spin(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``image2pose`` items of SPIN-style npz files (all, or one part of ``plan``)."""
    return read_format(SPIN, name, source, ctx, part)


def read_hmr2(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``image2pose`` items of HMR2-style npz files (all, or one part of ``plan``)."""
    return read_format(HMR2, name, source, ctx, part)
