"""AMASS-style motion sequences, PoseScript V2 and V1 files, and the ``spg`` descriptions.

Each sequence shows one activity: a smooth motion through three random variants
of it, seen from a yaw that drifts a little. Its SMPL-H poses go into an AMASS
"SMPL+H G" npz (``poses`` (T, 156) axis-angle in AMASS's z-up world, ``trans``
(T, 3), ``betas`` (16,), ``gender``, ``mocap_framerate``), stored either under
AMASS's old folder name (``BioMotionLab_NTroje``) or today's (``BMLrub``). Some
frames of each sequence become PoseScript pose ids; PoseScript's files name the
sequence by its *old* folder name, as the real release does, so a reader needs
an alias table to find the half stored under new names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipelines.synthetic import captioner
from pipelines.synthetic.config import SynthConfig
from pipelines.synthetic.poses import (
    ACTIVITIES,
    Activity,
    matrix_to_rotvec,
    rot_x,
    rotvec_to_matrix,
    sample_activity_pose,
    slerp_track,
)
from pipelines.synthetic.threads import single_thread
from pipelines.synthetic.writers import write_json, write_npz
from posegpt.body.model import BodyModel

AMASS_RENAMES: dict[str, str] = {
    "BioMotionLab_NTroje": "BMLrub",
    "MPI_HDM05": "HDM05",
    "MPI_Limits": "PosePrior",
    "DFaust_67": "DFaust",
    "CMU": "CMU",
}
"""AMASS folder names used by PoseScript (old) → today's names (the same for CMU)."""

SPLITS = ("train", "val", "test")
SMPLH_JOINTS = 52
SMPLH_HAND_JOINTS = 30
FRAMERATE = 60.0
V1_AUTO_LETTERS = "ABCDEF"

# Streams of the seeded generators: each part of the world draws from its own.
STREAM_SEQUENCES, STREAM_CAPTIONS, STREAM_SPLITS, STREAM_HUMAN, STREAM_SPG = 1, 2, 3, 4, 5


@dataclass
class Sequence:
    """One AMASS-style sequence and the PoseScript pose ids taken from it."""

    index: int
    activity: Activity
    mirror: bool
    split: str
    old_dataset: str
    stored_dataset: str
    subject: str
    name: str
    canonical: np.ndarray
    """(T, 24, 3) SMPL poses in the canonical frame (y up)."""
    yaw_deg: np.ndarray
    """(T,) heading of the body about AMASS's vertical axis."""
    hands: np.ndarray
    """(T, 30, 3) SMPL-H finger joints."""
    betas: np.ndarray
    gender: str
    frames: list[int]
    pose_ids: list[int] = field(default_factory=list)

    @property
    def posescript_path(self) -> str:
        """The path PoseScript records: old folder name."""
        return f"{self.old_dataset}/{self.subject}/{self.name}_poses.npz"

    @property
    def stored_path(self) -> str:
        return f"{self.stored_dataset}/{self.subject}/{self.name}_poses.npz"


@dataclass
class PoseRecord:
    """A PoseScript pose id with its captions."""

    pose_id: int
    sequence: Sequence
    frame: int
    canonical: np.ndarray
    """(24, 3) SMPL pose, canonical frame."""
    auto: list[str] = field(default_factory=list)
    human: list[str] = field(default_factory=list)


def split_labels(n: int, cfg: SynthConfig, rng: np.random.Generator) -> list[str]:
    """``n`` split names in a random order: ``val_fraction`` val, ``test_fraction`` test, the rest train."""
    n_val = round(n * cfg.val_fraction)
    n_test = round(n * cfg.test_fraction)
    if n >= 3:
        n_val = max(n_val, 1) if cfg.val_fraction > 0 else 0
        n_test = max(n_test, 1) if cfg.test_fraction > 0 else 0
    labels = ["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test)
    order = rng.permutation(n)
    return [labels[i] for i in np.argsort(order)]


def _motion(activity: Activity, rng: np.random.Generator, mirror: bool, frames: int) -> np.ndarray:
    """(T, 24, 3): piecewise slerp through three variants of the activity."""
    return slerp_track(np.stack([sample_activity_pose(activity, rng, mirror) for _ in range(3)]), frames)


def make_sequences(cfg: SynthConfig) -> list[Sequence]:
    n_seq = math.ceil(cfg.poses / cfg.poses_per_sequence)
    rng = np.random.default_rng([cfg.seed, STREAM_SEQUENCES])
    splits = split_labels(n_seq, cfg, np.random.default_rng([cfg.seed, STREAM_SPLITS]))
    old_names = list(AMASS_RENAMES)
    sequences: list[Sequence] = []
    # Activities in shuffled rounds, so every activity appears about equally often in every size.
    order: list[int] = []
    remaining = cfg.poses
    for i in range(n_seq):
        if not order:
            order = list(rng.permutation(len(ACTIVITIES)))
        activity = ACTIVITIES[int(order.pop())]
        mirror = bool(rng.random() < 0.5)
        seq_rng = np.random.default_rng([cfg.seed, STREAM_SEQUENCES, i])
        canonical = _motion(activity, seq_rng, mirror, cfg.frames_per_sequence)
        yaw0 = seq_rng.uniform(-180.0, 180.0)
        yaw = yaw0 + np.linspace(0.0, seq_rng.uniform(-20.0, 20.0), cfg.frames_per_sequence)
        curl = seq_rng.uniform(0.0, 0.6)
        hands = np.tile(np.array([curl, 0.0, 0.0]), (cfg.frames_per_sequence, SMPLH_HAND_JOINTS, 1))
        hands += seq_rng.normal(0.0, 0.05, size=hands.shape)
        old = old_names[i % len(old_names)]
        stored = old if seq_rng.random() < cfg.old_name_fraction else AMASS_RENAMES[old]
        n_ids = min(cfg.poses_per_sequence, remaining)
        remaining -= n_ids
        spots = np.linspace(0, cfg.frames_per_sequence - 1, n_ids + 2)[1:-1] if n_ids else np.array([])
        frames = sorted(
            {
                int(np.clip(round(s + seq_rng.uniform(-1.5, 1.5)), 0, cfg.frames_per_sequence - 1))
                for s in spots
            }
        )
        # Jitter may merge two frames: fill up with unused ones so the id count is exact.
        spare = [f for f in range(cfg.frames_per_sequence) if f not in frames]
        while len(frames) < n_ids:
            frames.append(spare.pop(int(seq_rng.integers(len(spare)))))
        sequences.append(
            Sequence(
                index=i,
                activity=activity,
                mirror=mirror,
                split=splits[i],
                old_dataset=old,
                stored_dataset=stored,
                subject=f"subject{i % 7:02d}",
                name=f"{i:04d}_{activity.name}",
                canonical=canonical,
                yaw_deg=yaw,
                hands=hands,
                betas=seq_rng.normal(0.0, 0.5, size=16),
                gender=("neutral", "female", "male")[i % 3],
                frames=sorted(frames),
            )
        )
    return sequences


def amass_poses(seq: Sequence) -> np.ndarray:
    """(T, 156) SMPL-H axis-angle in AMASS's z-up world: root ``Rz(yaw)·Rx(+90°)·A``."""
    frames = seq.canonical.shape[0]
    out = np.zeros((frames, SMPLH_JOINTS, 3))
    yaw = np.radians(seq.yaw_deg)
    rz = rotvec_to_matrix(np.stack([np.zeros(frames), np.zeros(frames), yaw], axis=1))
    roots = rz @ rot_x(90.0) @ rotvec_to_matrix(seq.canonical[:, 0])
    out[:, 0] = matrix_to_rotvec(roots)
    out[:, 1:22] = seq.canonical[:, 1:22]
    out[:, 22:] = seq.hands
    return out.reshape(frames, SMPLH_JOINTS * 3)


def _translations(body: BodyModel, poses: np.ndarray, seq_index: int) -> np.ndarray:
    """Root translations that put the lowest joint on the floor (z = 0) and walk a little."""
    smpl = np.zeros((poses.shape[0], 72), dtype=np.float32)
    smpl[:, :66] = poses[:, :66]
    with single_thread():
        joints = body.joints(torch.from_numpy(smpl)).numpy()
    trans = np.zeros((poses.shape[0], 3))
    trans[:, 2] = -joints[:, :, 2].min(axis=1) + 0.05
    step = np.linspace(0.0, 0.5, poses.shape[0])
    trans[:, 0] = step * math.cos(seq_index)
    trans[:, 1] = step * math.sin(seq_index)
    return trans


def write_amass(root: Path, sequences: list[Sequence], body: BodyModel) -> list[Path]:
    written = []
    for seq in sequences:
        poses = amass_poses(seq)
        arrays = {
            "trans": _translations(body, poses, seq.index),
            "gender": np.array(seq.gender),
            "mocap_framerate": np.array(FRAMERATE),
            "betas": seq.betas,
            "poses": poses,
        }
        written.append(write_npz(root / seq.stored_path, arrays))
    return written


def make_pose_records(sequences: list[Sequence]) -> list[PoseRecord]:
    records: list[PoseRecord] = []
    for seq in sequences:
        for frame in seq.frames:
            pid = len(records)
            seq.pose_ids.append(pid)
            records.append(PoseRecord(pid, seq, frame, seq.canonical[frame]))
    return records


def canonical_joints(body: BodyModel, poses: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(N, 24, 3) joints (betas 0) of (N, 24, 3) canonical poses."""
    flat = np.asarray(poses, dtype=np.float32).reshape(-1, 72)
    out = []
    with single_thread():
        for i in range(0, len(flat), batch):
            out.append(body.joints(torch.from_numpy(flat[i : i + batch])).numpy())
    return np.concatenate(out) if out else np.zeros((0, 24, 3), dtype=np.float32)


def caption_records(cfg: SynthConfig, records: list[PoseRecord], body: BodyModel) -> None:
    """Fill the automatic captions of every record and the human ones of a random subset."""
    joints = canonical_joints(body, np.stack([r.canonical for r in records])) if records else []
    pick = np.random.default_rng([cfg.seed, STREAM_HUMAN])
    n_auto = max(cfg.auto_captions, len(V1_AUTO_LETTERS))
    for rec, jt in zip(records, joints, strict=True):
        codes = captioner.posecodes(jt)
        rng = np.random.default_rng([cfg.seed, STREAM_CAPTIONS, rec.pose_id])
        rec.auto = [captioner.describe_codes(codes, rng, "auto") for _ in range(n_auto)]
        if pick.random() < cfg.human_fraction:
            # A few poses have two human captions, as in PoseScript V2 (a list instead of a string).
            n_human = 2 if pick.random() < 0.15 else 1
            rec.human = [captioner.describe_codes(codes, rng, "human") for _ in range(n_human)]


def write_posescript_v2(folder: Path, cfg: SynthConfig, records: list[PoseRecord]) -> dict[str, int]:
    ids = {str(r.pose_id): ["AMASS", r.sequence.posescript_path, r.frame] for r in records}
    write_json(folder / "ids_2_dataset_sequence_and_frame_index_100k.json", ids)
    counts = {}
    for split in SPLITS:
        split_ids = [r.pose_id for r in records if r.sequence.split == split]
        write_json(folder / f"{split}_ids_100k.json", split_ids)
        counts[split] = len(split_ids)
    human = {str(r.pose_id): (r.human[0] if len(r.human) == 1 else r.human) for r in records if r.human}
    write_json(folder / "posescript_human_6293.json", human)
    write_json(
        folder / "posescript_auto_100k.json", {str(r.pose_id): r.auto[: cfg.auto_captions] for r in records}
    )
    counts["human"] = len(human)
    return counts


def write_posescript_v1(folder: Path, cfg: SynthConfig, records: list[PoseRecord]) -> dict[str, int]:
    subset = records[: cfg.v1_poses]
    write_json(
        folder / "ids_2_dataset_sequence_and_frame_index.json",
        {str(r.pose_id): ["AMASS", r.sequence.posescript_path, r.frame] for r in subset},
    )
    counts = {}
    for split in SPLITS:
        split_ids = [r.pose_id for r in subset if r.sequence.split == split]
        write_json(folder / f"{split}_ids.json", split_ids)
        counts[split] = len(split_ids)
    write_json(folder / "human6293.json", {str(r.pose_id): r.human[0] for r in subset if r.human})
    for k, letter in enumerate(V1_AUTO_LETTERS):
        write_json(folder / f"automatic_{letter}.json", {str(r.pose_id): r.auto[k] for r in subset})
    counts["human"] = sum(1 for r in subset if r.human)
    return counts


def write_spg(folder: Path, cfg: SynthConfig, records: list[PoseRecord]) -> dict[str, int]:
    """``spg/spg_{split}.json``: ``[{"pose_id", "activity", "description"}]`` for a share of each split's ids."""
    counts = {}
    for split in SPLITS:
        rng = np.random.default_rng([cfg.seed, STREAM_SPG, SPLITS.index(split)])
        entries = []
        for rec in records:
            if rec.sequence.split != split or rng.random() >= cfg.spg_fraction:
                continue
            act = rec.sequence.activity
            entries.append(
                {
                    "pose_id": rec.pose_id,
                    "activity": act.name,
                    "description": act.implicit[int(rng.integers(len(act.implicit)))],
                }
            )
        write_json(folder / f"spg_{split}.json", entries, indent=1)
        counts[split] = len(entries)
    return counts


__all__ = [
    "AMASS_RENAMES",
    "SPLITS",
    "PoseRecord",
    "Sequence",
    "amass_poses",
    "caption_records",
    "make_pose_records",
    "make_sequences",
    "split_labels",
    "write_amass",
    "write_posescript_v1",
    "write_posescript_v2",
    "write_spg",
]
