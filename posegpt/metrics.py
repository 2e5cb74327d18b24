"""Pose metrics as defined in DESIGN.md, batched; each returns per-sample values and their mean.

* ``mpjpe``: mean per-joint position error in mm after subtracting the pelvis (joint 0);
* ``pa_mpjpe``: the same after a per-sample similarity Procrustes fit (scale,
  rotation, translation) of the prediction onto the ground truth;
* ``mpjre``: mean geodesic angle ``arccos((tr(R̂ᵀR) − 1) / 2)`` over the 24 joint
  rotations, in radians (reports show it ×100, as the paper's tables do);
* ``recall_at_k``: retrieval recall from a query × gallery similarity matrix.

Joint inputs are in metres, (B, J, 3); pose inputs are SMPL axis-angle (B, 72) or
rotation matrices (B, 24, 3, 3). ``pose_errors`` runs poses through the body model
(betas 0) and returns all three per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from posegpt.body.skeleton import NUM_JOINTS, POSE_DIM
from posegpt.geometry import axis_angle_to_rotmat, geodesic_angle, procrustes_align

if TYPE_CHECKING:
    from posegpt.body.model import BodyModel

MM_PER_M = 1000.0


def _tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not x.is_floating_point():
        x = x.to(torch.float64)
    return x


def _finite(x: Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).nonzero()
        raise ValueError(f"{name}: sample {int(bad[0, 0])} holds NaN or inf")


def _joint_pair(pred: Tensor | np.ndarray, gt: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    p, g = _tensor(pred, "pred_joints"), _tensor(gt, "gt_joints")
    for x, name in ((p, "pred_joints"), (g, "gt_joints")):
        if x.ndim != 3 or x.shape[-1] != 3 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} must have shape (B, J, 3) with B, J >= 1, got {tuple(x.shape)}")
        _finite(x, name)
    if p.shape != g.shape:
        raise ValueError(
            f"pred_joints {tuple(p.shape)} and gt_joints {tuple(g.shape)} must have the same shape"
        )
    dtype = torch.promote_types(p.dtype, g.dtype)
    return p.to(dtype), g.to(dtype)


def mpjpe(pred_joints: Tensor | np.ndarray, gt_joints: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-sample MPJPE (B,) in mm after subtracting each set's pelvis (joint 0), and the mean."""
    p, g = _joint_pair(pred_joints, gt_joints)
    per = ((p - p[:, :1]) - (g - g[:, :1])).norm(dim=-1).mean(dim=-1) * MM_PER_M
    return per, per.mean()


def pa_mpjpe(pred_joints: Tensor | np.ndarray, gt_joints: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-sample PA-MPJPE (B,) in mm after a similarity Procrustes fit of pred onto gt, and the mean."""
    p, g = _joint_pair(pred_joints, gt_joints)
    if p.shape[1] < 3:
        raise ValueError(f"PA-MPJPE needs at least 3 joints per sample, got {p.shape[1]}")
    aligned = procrustes_align(p, g)
    per = (aligned - g).norm(dim=-1).mean(dim=-1) * MM_PER_M
    return per, per.mean()


def _rotmats(poses: Tensor | np.ndarray, name: str) -> Tensor:
    x = _tensor(poses, name)
    if x.ndim == 2 and x.shape[1] == POSE_DIM and x.shape[0] > 0:
        _finite(x, name)
        return axis_angle_to_rotmat(x.reshape(x.shape[0], NUM_JOINTS, 3))
    if x.ndim == 4 and x.shape[1:] == (NUM_JOINTS, 3, 3) and x.shape[0] > 0:
        _finite(x, name)
        return x
    raise ValueError(
        f"{name} must be axis-angle poses (B, {POSE_DIM}) or rotation matrices (B, {NUM_JOINTS}, 3, 3), "
        f"got {tuple(x.shape)}"
    )


def mpjre(pred_poses: Tensor | np.ndarray, gt_poses: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-sample mean geodesic angle (B,) over the 24 joints, in radians, and the mean."""
    rp, rg = _rotmats(pred_poses, "pred_poses"), _rotmats(gt_poses, "gt_poses")
    if rp.shape != rg.shape:
        raise ValueError(
            f"pred_poses and gt_poses must have the same batch size, got {rp.shape[0]} and {rg.shape[0]}"
        )
    dtype = torch.promote_types(rp.dtype, rg.dtype)
    per = geodesic_angle(rp.to(dtype), rg.to(dtype)).mean(dim=-1)
    return per, per.mean()


def recall_at_k(
    similarity: Tensor | np.ndarray, k: int, targets: Tensor | np.ndarray | None = None
) -> tuple[Tensor, Tensor]:
    """Per-query hits (Q,) as 0/1 floats, and the recall (their mean, in [0, 1]).

    ``similarity`` (Q, G): higher is closer. Query ``i`` matches gallery item
    ``targets[i]`` (default ``i``, the diagonal). A hit means fewer than ``k`` gallery
    items score strictly higher than the match (ties count in the query's favour).
    """
    sim = _tensor(similarity, "similarity")
    if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"similarity must have shape (queries, gallery), got {tuple(sim.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if torch.isnan(sim).any():
        raise ValueError("similarity holds NaN")
    q, g = sim.shape
    if targets is None:
        if q != g:
            raise ValueError(f"similarity is {q}×{g}: give targets when queries and gallery differ in size")
        tgt = torch.arange(q, device=sim.device)
    else:
        tgt = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets).long()
        if tgt.shape != (q,):
            raise ValueError(f"targets must have shape ({q},), got {tuple(tgt.shape)}")
        if tgt.min() < 0 or tgt.max() >= g:
            raise ValueError(
                f"targets must index the gallery [0, {g}), got values in [{int(tgt.min())}, {int(tgt.max())}]"
            )
        tgt = tgt.to(sim.device)
    match = sim.gather(1, tgt[:, None])
    rank = (sim > match).sum(dim=1)
    hits = (rank < k).to(sim.dtype)
    return hits, hits.mean()


@dataclass
class PoseErrors:
    """Per-sample pose errors; ``means()`` gives the numbers a report prints."""

    mpjpe: np.ndarray
    """(B,) mm."""
    pa_mpjpe: np.ndarray
    """(B,) mm."""
    mpjre: np.ndarray
    """(B,) radians."""

    def means(self) -> dict[str, float]:
        """Means: ``mpjpe`` and ``pa_mpjpe`` in mm, ``mpjre`` in radians and ``mpjre_x100``."""
        return {
            "mpjpe": float(self.mpjpe.mean()),
            "pa_mpjpe": float(self.pa_mpjpe.mean()),
            "mpjre": float(self.mpjre.mean()),
            "mpjre_x100": float(self.mpjre.mean() * 100.0),
        }


def pose_errors(
    pred_poses: Tensor | np.ndarray,
    gt_poses: Tensor | np.ndarray,
    body: BodyModel | None = None,
    batch_size: int = 4096,
) -> PoseErrors:
    """MPJPE, PA-MPJPE and MPJRE per sample for SMPL poses (B, 72), joints with betas 0.

    ``body`` defaults to the shared procedural body (``default_body_model()``).
    """
    if body is None:
        from posegpt.body.model import default_body_model

        body = default_body_model()
    p, g = _tensor(pred_poses, "pred_poses"), _tensor(gt_poses, "gt_poses")
    for x, name in ((p, "pred_poses"), (g, "gt_poses")):
        if x.ndim != 2 or x.shape[1] != POSE_DIM or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (B, {POSE_DIM}) with B >= 1, got {tuple(x.shape)}")
        _finite(x, name)
    if p.shape != g.shape:
        raise ValueError(
            f"pred_poses {tuple(p.shape)} and gt_poses {tuple(g.shape)} must have the same shape"
        )
    out: dict[str, list[np.ndarray]] = {"mpjpe": [], "pa_mpjpe": [], "mpjre": []}
    with torch.no_grad():
        for start in range(0, p.shape[0], batch_size):
            pp, gg = p[start : start + batch_size], g[start : start + batch_size]
            jp, jg = body.joints(pp), body.joints(gg)
            out["mpjpe"].append(mpjpe(jp, jg)[0].cpu().numpy())
            out["pa_mpjpe"].append(pa_mpjpe(jp, jg)[0].cpu().numpy())
            out["mpjre"].append(mpjre(pp, gg)[0].cpu().numpy())
    return PoseErrors(**{k: np.concatenate(v).astype(np.float64) for k, v in out.items()})
