"""Pose error on a held-out slice during training, next to the mean-pose baseline.

Every rank takes an equal part of the first ``validation.samples`` rows of each
validation task and runs the model on them with teacher forcing: the pose is the
head's reading of the hidden state that predicts each ``<POSE>`` of the reference
answer, the same state generation uses. Every rank runs the same number of
forward passes (ZeRO 3 gathers weights collectively). Rank 0 collects the
predictions, turns them into joints with the body model and reports PA-MPJPE,
MPJPE and MPJRE, the same numbers for the training mean pose, and their ratio:
the curve that says whether the pose head learns (the L1 on rotation matrices is
a poor progress signal, DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from posegpt.body.skeleton import NUM_JOINTS, POSE_DIM


@dataclass
class ValidationSlice:
    """This rank's validation rows of one task and the baseline pose to compare with."""

    task: str
    rows: list[dict[str, Any]]
    mean_pose: np.ndarray
    """(72,) training mean pose of the task (chordal mean of rotations)."""


def rank_share(rows: Sequence[dict[str, Any]], rank: int, world_size: int) -> list[dict[str, Any]]:
    """An equal, disjoint share per rank (the remainder is left out so every rank does the same work)."""
    per_rank = len(rows) // world_size
    return list(rows[rank * per_rank : (rank + 1) * per_rank])


def predict_poses(
    forward: Callable[[dict[str, Any]], Any],
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predicted and reference poses (P, 72) of every ``<POSE>`` in ``rows``, and their sample ids."""
    import torch

    from posegpt.geometry import rotmat_to_axis_angle

    preds, gts, ids = [], [], []
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start : start + batch_size])
        batch = collate(chunk)
        with torch.no_grad():
            out = forward(batch)
        rot = out.pred_rotmats.detach().float().cpu()
        preds.append(rotmat_to_axis_angle(rot).reshape(-1, POSE_DIM).numpy())
        gts.append(batch["pose_targets"].float().numpy().reshape(-1, POSE_DIM))
        for row_index in batch["pose_index"][:, 0].tolist():
            ids.append(str(chunk[row_index].get("sample_id")))
    if not preds:
        return np.zeros((0, POSE_DIM), np.float32), np.zeros((0, POSE_DIM), np.float32), []
    return np.concatenate(preds), np.concatenate(gts), ids


def score(
    pred: np.ndarray, gt: np.ndarray, mean_pose: np.ndarray, body: Any, prefix: str
) -> dict[str, float]:
    """Metrics of the predictions and of the mean pose on the same references, and their ratio."""
    from posegpt.metrics import pose_errors

    if len(gt) == 0:
        return {}
    model = pose_errors(pred, gt, body).means()
    baseline = pose_errors(np.repeat(mean_pose.reshape(1, POSE_DIM), len(gt), axis=0), gt, body).means()
    out = {f"{prefix}/{k}": v for k, v in model.items()}
    out.update({f"{prefix}/mean_pose_{k}": v for k, v in baseline.items()})
    out[f"{prefix}/pa_mpjpe_vs_mean_pose"] = model["pa_mpjpe"] / max(baseline["pa_mpjpe"], 1e-9)
    out[f"{prefix}/count"] = float(len(gt))
    return out


def training_mean_pose(train_poses: np.ndarray) -> np.ndarray:
    """The chordal mean of the training rotations per joint (identity when no pose is given)."""
    from posegpt.evaluation.baselines import mean_pose

    if len(train_poses) == 0:
        return np.zeros(NUM_JOINTS * 3, dtype=np.float32)
    return mean_pose(train_poses)
