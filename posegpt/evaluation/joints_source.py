"""Evaluation sources with 3D joints and no SMPL pose: SPIN's ``h36m_valid_protocol*.npz``.

SPIN's ``datasets/preprocess/h36m.py`` writes, per kept frame (subjects S9 and
S11, every 5th frame; protocol 2 keeps camera 60457274 only):

* ``imgname`` (N,): image path relative to the H36M folder (``images/S9_...jpg``);
* ``center`` (N, 2): box centre in pixels;
* ``scale`` (N,): box side / 200 (SPIN's crop is 200 × scale pixels wide);
* ``S`` (N, 24, 4): SPIN's 24 ground-truth joints in metres, root-centred, and a
  confidence (1 for the 17 H36M joints, 0 elsewhere).

There is no ``pose``: the prepare job (which needs a pose per row) cannot make
shards of it, so the evaluation reads it itself. Each row becomes an
``image2pose`` query: the crop the prepare job would cut (``posegpt.data.crops``, box
200 × scale × ``crop_padding``) and the question of a template preset. The queries
are written to a Parquet file of the QA schema (no ``poses``) under the
evaluation's output folder, so the same Ray actor pool answers them; the answers
are scored on SPIN's 14 joints only (``PoseScorer.score_joints``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posegpt.data.crops import ImageLimits, crop_box, decode_image, encode_jpeg
from posegpt.data.schema import QA_SCHEMA
from posegpt.data.templates import expand
from posegpt.evaluation.config import JointsSourceConfig
from posegpt.evaluation.scoring import spin_gt_joints14
from posegpt.storage import StorageConfig, is_s3, join, read_bytes

SPIN_BOX_UNIT = 200.0
"""SPIN's ``scale`` is the box side in units of 200 pixels."""
NPZ_FIELDS: tuple[str, ...] = ("imgname", "center", "scale", "S")
"""Arrays a joints-only SPIN file must hold."""
QUERY_TASK = "image2pose"
"""The task whose phrasing the queries take."""


@dataclass
class JointRows:
    """The rows of one joints-only file, with SPIN's 14 ground-truth joints."""

    file: str
    dataset: str
    indices: np.ndarray
    """(N,) row of each sample in the file."""
    imgnames: list[str]
    centers: np.ndarray
    """(N, 2) pixels."""
    box_sizes: np.ndarray
    """(N,) SPIN's box side in pixels (200 × scale)."""
    joints14: np.ndarray
    """(N, 14, 3) metres, root-centred (``S[:, J24_TO_J14, :3]``)."""

    @property
    def sample_ids(self) -> list[str]:
        return [
            f"{self.dataset}:{name}:{int(i)}" for name, i in zip(self.imgnames, self.indices, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, idx: np.ndarray) -> JointRows:
        return JointRows(
            self.file,
            self.dataset,
            self.indices[idx],
            [self.imgnames[i] for i in idx],
            self.centers[idx],
            self.box_sizes[idx],
            self.joints14[idx],
        )


def read_spin_joints(path: str, dataset: str, storage: StorageConfig | None = None) -> JointRows:
    """Every row of a SPIN joints file; ValueError naming the file, field and row of anything malformed."""
    try:
        data = read_bytes(path, storage)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"joints source {path} does not exist") from exc
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable npz without pickled objects ({exc})") from exc
    missing = [k for k in NPZ_FIELDS if k not in arrays]
    if missing:
        raise ValueError(
            f"{path}: missing arrays {missing} (a SPIN joints file holds {list(NPZ_FIELDS)}; found {sorted(arrays)})"
        )
    n = len(arrays["imgname"])
    lengths = {k: len(arrays[k]) for k in NPZ_FIELDS}
    if len(set(lengths.values())) != 1 or n == 0:
        raise ValueError(f"{path}: arrays must have the same non-zero length, got {lengths}")
    centers = np.asarray(arrays["center"], dtype=np.float64)
    if centers.shape != (n, 2):
        raise ValueError(f"{path}: center must have shape ({n}, 2), got {centers.shape}")
    scale = np.asarray(arrays["scale"], dtype=np.float64).reshape(n, -1).max(axis=1)
    bad = ~(np.isfinite(centers).all(axis=1) & np.isfinite(scale) & (scale > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: row {i} ({arrays['imgname'][i]}) has a bad box (center {centers[i].tolist()}, scale {scale[i]})"
        )
    joints = spin_gt_joints14(arrays["S"], f"{path} S")
    return JointRows(
        path,
        dataset,
        np.arange(n),
        [str(x) for x in arrays["imgname"]],
        centers,
        scale * SPIN_BOX_UNIT,
        joints,
    )


def write_query_shard(
    rows: JointRows,
    cfg: JointsSourceConfig,
    out_file: Path,
    preset: str,
    seed: int,
    storage: StorageConfig | None = None,
    limits: ImageLimits | None = None,
) -> Path:
    """The crops and questions of ``rows`` as one Parquet file of the QA schema (no poses)."""
    root = cfg.image_root or (rows.file.rsplit("/", 1)[0] if "/" in rows.file else ".")
    limits = limits or ImageLimits()
    records: list[dict[str, Any]] = []
    for k, sid in enumerate(rows.sample_ids):
        name = rows.imgnames[k]
        uri = join(root, name) if is_s3(root) else str(Path(root) / name)
        try:
            pixels = decode_image(read_bytes(uri, storage), limits, uri)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{rows.file} row {int(rows.indices[k])}: image {uri} does not exist"
            ) from exc
        crop = crop_box(pixels, rows.centers[k], rows.box_sizes[k], cfg.crop_padding, cfg.image_size)
        conversation, templates = expand(QUERY_TASK, None, sid, seed, preset)
        meta = {
            "file": rows.file,
            "index": int(rows.indices[k]),
            "imgname": name,
            "center": [float(c) for c in rows.centers[k]],
            "box_size": float(rows.box_sizes[k]),
            "crop": {"padding": cfg.crop_padding, "size": cfg.image_size},
            "templates": templates,
        }
        records.append(
            {
                "sample_id": sid,
                "task": QUERY_TASK,
                "source": cfg.dataset,
                "split": "test",
                "conversation": conversation,
                "image": encode_jpeg(crop, cfg.jpeg_quality),
                "meta": json.dumps(meta, sort_keys=True),
            }
        )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=QA_SCHEMA), out_file)
    return out_file
