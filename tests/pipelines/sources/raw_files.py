"""Tiny raw datasets in the real formats, written by the reader and prepare tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def jpeg(path: Path, seed: int, size: tuple[int, int] = (96, 80)) -> Path:
    """A random-coloured JPEG of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return path


def amass_sequence(path: Path, frames: int, yaw_deg: float, seed: int) -> np.ndarray:
    """An AMASS SMPL+H G npz of an upright body turned by ``yaw_deg`` about z; returns its (T, 156) poses."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(0.0, 0.2, size=(frames, 156))
    # Upright in AMASS's z-up world: SMPL's y-up body rotated by Rx(+90°), then a heading about z.
    root = Rotation.from_euler("z", yaw_deg, degrees=True) * Rotation.from_euler("x", 90, degrees=True)
    poses[:, :3] = root.as_rotvec()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        poses=poses,
        trans=np.zeros((frames, 3)),
        betas=np.zeros(16),
        gender=np.array("neutral"),
        mocap_framerate=np.array(60.0),
    )
    return poses


def posescript_v2(
    root: Path, entries: dict[int, tuple[str, int]], splits: dict[str, list[int]], human: dict, auto: dict
) -> Path:
    folder = root / "posescript"
    write_json(
        folder / "ids_2_dataset_sequence_and_frame_index_100k.json",
        {str(k): ["AMASS", rel, fr] for k, (rel, fr) in entries.items()},
    )
    for split, ids in splits.items():
        write_json(folder / f"{split}_ids_100k.json", ids)
    write_json(folder / "posescript_human_6293.json", {str(k): v for k, v in human.items()})
    write_json(folder / "posescript_auto_100k.json", {str(k): v for k, v in auto.items()})
    return folder


def posescript_v1(
    root: Path,
    entries: dict[int, tuple[str, int]],
    splits: dict[str, list[int]],
    human: dict,
    auto: dict[int, list[str]],
) -> Path:
    folder = root / "posescript_v1"
    write_json(
        folder / "ids_2_dataset_sequence_and_frame_index.json",
        {str(k): ["AMASS", rel, fr] for k, (rel, fr) in entries.items()},
    )
    for split, ids in splits.items():
        write_json(folder / f"{split}_ids.json", ids)
    write_json(folder / "human6293.json", {str(k): v for k, v in human.items()})
    for i, letter in enumerate("ABCDEF"):
        write_json(folder / f"automatic_{letter}.json", {str(k): v[i] for k, v in auto.items() if i < len(v)})
    return folder


def spin_npz(path: Path, imgnames: list[str], centers, scales, poses, has_smpl=None) -> Path:
    n = len(imgnames)
    arrays = {
        "imgname": np.array(imgnames),
        "center": np.asarray(centers, dtype=np.float64),
        "scale": np.asarray(scales, dtype=np.float64),
        "pose": np.asarray(poses, dtype=np.float64),
        "shape": np.arange(n * 10, dtype=np.float64).reshape(n, 10) / 100,
    }
    if has_smpl is not None:
        arrays["has_smpl"] = np.asarray(has_smpl, dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def hmr2_npz(path: Path, imgnames: list[str], centers, scales, poses, has_pose, has_betas) -> Path:
    n = len(imgnames)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        imgname=np.array(imgnames),
        center=np.asarray(centers, dtype=np.float64),
        scale=np.asarray(scales, dtype=np.float64),
        body_pose=np.asarray(poses, dtype=np.float64),
        has_body_pose=np.asarray(has_pose, dtype=np.float64),
        betas=np.ones((n, 10)),
        has_betas=np.asarray(has_betas, dtype=np.float64),
    )
    return path


def hmr2_person(center, scale, pose, has_pose: float = 1.0, betas=None, has_betas: float = 1.0) -> dict:
    """One person of an HMR 2.0 ``data.pyd`` as 4D-Humans stores it (scale in units of 200 pixels)."""
    return {
        "center": np.asarray(center, dtype=np.float32),
        "scale": np.asarray(scale, dtype=np.float32),
        "body_pose": np.asarray(pose, dtype=np.float32),
        "has_body_pose": np.asarray(has_pose, dtype=np.float32),
        "betas": np.asarray(betas if betas is not None else np.zeros(10), dtype=np.float32),
        "has_betas": np.asarray(has_betas, dtype=np.float32),
        "keypoints_2d": np.zeros((44, 3), dtype=np.float32),
        "keypoints_3d": np.zeros((44, 4), dtype=np.float32),
        "extra_info": {"fitting_loss": np.array({}), "detection_npz_idx": 0},
    }


def hmr2_tar(path: Path, samples: list[tuple[str, dict[str, object]]]) -> Path:
    """A webdataset shard as 4D-Humans' TarWriter writes it: for each (key, members), ``<key>.<ext>``
    in order; ``data.pyd`` values are pickled (a list of person dicts), bytes are written as they are."""
    import pickle
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, value in members.items():
                data = value if isinstance(value, bytes) else pickle.dumps(value)
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    return path


def jpeg_bytes(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Hostile:
    """Unpickling this creates ``marker`` (what an attacker's pickle would do with a worse call)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def posefix_release(
    root: Path,
    entries: dict[int, tuple[str, int]],
    pairs: list,
    splits: dict[str, tuple[list[int], list[int]]],
    human: dict,
    paraphrases: dict,
    auto: dict,
) -> Path:
    """A ``posefix_dataset_release`` folder; ``splits`` maps a split to (in-sequence, out-of-sequence) pair ids."""
    folder = root / "posefix"
    write_json(
        folder / "ids_2_dataset_sequence_and_frame_index_100k.json",
        {str(k): ["AMASS", rel, fr] for k, (rel, fr) in entries.items()},
    )
    write_json(folder / "pair_id_2_pose_ids.json", pairs)
    for split, (inside, outside) in splits.items():
        write_json(folder / f"{split}_in_sequence_pair_ids.json", inside)
        write_json(folder / f"{split}_out_sequence_pair_ids.json", outside)
    write_json(folder / "posefix_human_6157.json", {str(k): v for k, v in human.items()})
    write_json(folder / "posefix_paraphrases_4284.json", {str(k): v for k, v in paraphrases.items()})
    write_json(folder / "posefix_auto_135305.json", {str(k): v for k, v in auto.items()})
    return folder
