"""SMPL's joint tree: the pose layout every part of the project shares (DESIGN.md)."""

from __future__ import annotations

NUM_JOINTS = 24
"""SMPL joints: 0 is the global orientation (pelvis), 1–23 the body."""

POSE_DIM = NUM_JOINTS * 3
"""Axis-angle floats per pose (72)."""

NUM_BETAS = 10
"""Shape coefficients stored per sample when a source gives them."""

JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)

PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

AMASS_BODY_JOINTS = 22
"""SMPL-H joints kept when converting AMASS to SMPL; SMPL's hands (22, 23) become identity."""
