"""Per-sample pose errors and their aggregation (overall, per source, per description type).

The 24-joint metrics come from ``posegpt.metrics.pose_errors`` (body model joints,
betas 0). With an H36M joint regressor (SPIN's ``J_regressor_h36m.npy``, 17 × 6890)
the 14-joint protocol of SPIN's ``eval.py`` is added: the 17 H36M joints are
regressed from the mesh vertices, the regressed pelvis (H36M joint 0) is
subtracted and the 14 of ``H36M_TO_J14`` kept, for the prediction and (when the
ground truth is a pose, as for 3DPW) for the ground truth; PA-MPJPE aligns them.

Sources with 3D joints and no pose (SPIN's ``h36m_valid_protocol*.npz``: ``S`` is
(N, 24, 4), SPIN's 24 ground-truth joints in metres, root-centred, with a
confidence column) are scored on joints only: the ground truth is
``S[:, J24_TO_J14, :3]`` as SPIN takes it, and only MPJPE and PA-MPJPE exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from posegpt.body.model import BodyModel
from posegpt.metrics import MM_PER_M, pa_mpjpe, pose_errors

H36M_TO_J17: tuple[int, ...] = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
"""SPIN's order of the 17 H36M regressor joints (constants.H36M_TO_J17)."""
H36M_TO_J14: tuple[int, ...] = H36M_TO_J17[:14]
"""SPIN's 14 evaluation joints: ankles, knees, hips, wrists, elbows, shoulders, neck, head."""
H36M_PELVIS = 0
"""The regressed H36M joint SPIN's evaluation subtracts from the 14 (the pelvis)."""
J24_TO_J14: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18)
"""SPIN's 14 evaluation joints inside its 24 ground-truth joints (constants.J24_TO_J14), same order as H36M_TO_J14."""

METRIC_UNITS: dict[str, str] = {
    "mpjpe": "mm",
    "pa_mpjpe": "mm",
    "mpjre_x100": "rad×100",
    "mpjpe_14": "mm",
    "pa_mpjpe_14": "mm",
}
JOINT_METRICS: tuple[str, ...] = ("mpjpe_14", "pa_mpjpe_14")
"""What a joints-only source (no ground-truth pose) is scored with."""
"""Per-sample metrics and the units their means are reported in."""


@dataclass
class SampleScores:
    """Per-sample errors of one method on one task (arrays aligned with ``sample_ids``)."""

    sample_ids: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    """Metric name → (N,) per-sample value, in report units (mm, rad×100)."""

    def means(self, mask: np.ndarray | None = None) -> dict[str, float]:
        out = {}
        for name, v in self.values.items():
            sel = v if mask is None else v[mask]
            out[name] = float(sel.mean()) if len(sel) else float("nan")
        return out


def load_h36m_regressor(path: str | Path, num_vertices: int) -> np.ndarray:
    """SPIN's ``J_regressor_h36m.npy``: (17, num_vertices) float array (file named in errors)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"metrics.h36m_regressor: {p} does not exist")
    try:
        reg = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"metrics.h36m_regressor: {p} is not a readable .npy array ({exc})") from exc
    if reg.ndim != 2 or reg.shape != (17, num_vertices):
        raise ValueError(f"metrics.h36m_regressor: {p} must have shape (17, {num_vertices}), got {reg.shape}")
    if not np.isfinite(reg).all():
        raise ValueError(f"metrics.h36m_regressor: {p} holds NaN or inf")
    return reg.astype(np.float32)


class PoseScorer:
    """Scores predicted against ground-truth poses with one body model."""

    def __init__(self, body: BodyModel, h36m_regressor: np.ndarray | None = None) -> None:
        self.body = body
        self.h36m = None if h36m_regressor is None else torch.from_numpy(h36m_regressor)

    def score(
        self, sample_ids: Sequence[str], pred: np.ndarray, gt: np.ndarray, h36m: bool = False
    ) -> SampleScores:
        """MPJPE, PA-MPJPE (mm) and MPJRE×100 per sample; the 14-joint pair when ``h36m``."""
        if len(sample_ids) != len(pred) or len(pred) != len(gt):
            raise ValueError(
                f"score: {len(sample_ids)} ids, {len(pred)} predictions, {len(gt)} ground truths"
            )
        errs = pose_errors(pred, gt, body=self.body)
        values = {"mpjpe": errs.mpjpe, "pa_mpjpe": errs.pa_mpjpe, "mpjre_x100": errs.mpjre * 100.0}
        if h36m:
            if self.h36m is None:
                raise ValueError("the 14-joint protocol needs metrics.h36m_regressor")
            values.update(self.h36m_errors(pred, gt))
        return SampleScores(list(sample_ids), values)

    @torch.no_grad()
    def joints14(self, poses: np.ndarray, chunk: int = 256) -> torch.Tensor:
        """(N, 14, 3) SPIN evaluation joints regressed from the mesh, minus the regressed pelvis (metres)."""
        if self.h36m is None:
            raise ValueError("the 14-joint protocol needs metrics.h36m_regressor")
        out = []
        for i in range(0, len(poses), chunk):
            verts = self.body.mesh(torch.as_tensor(poses[i : i + chunk], dtype=torch.float32)).vertices
            j17 = torch.einsum("jv,bvc->bjc", self.h36m.to(verts.dtype), verts)
            out.append(j17[:, list(H36M_TO_J14)] - j17[:, H36M_PELVIS : H36M_PELVIS + 1])
        return torch.cat(out)

    def h36m_errors(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
        """14-joint MPJPE / PA-MPJPE (mm) of predicted against ground-truth poses."""
        return joint_errors(self.joints14(pred), self.joints14(gt))

    def score_joints(
        self, sample_ids: Sequence[str], pred: np.ndarray, gt_joints14: np.ndarray
    ) -> SampleScores:
        """MPJPE / PA-MPJPE (mm) of predicted poses against ground-truth joints (N, 14, 3) in metres."""
        if len(sample_ids) != len(pred) or len(pred) != len(gt_joints14):
            raise ValueError(
                f"score_joints: {len(sample_ids)} ids, {len(pred)} predictions, {len(gt_joints14)} ground truths"
            )
        return SampleScores(list(sample_ids), joint_errors(self.joints14(pred), torch.as_tensor(gt_joints14)))


def joint_errors(pred14: torch.Tensor, gt14: torch.Tensor) -> dict[str, np.ndarray]:
    """SPIN's errors on centred joints: MPJPE with no further centring, PA-MPJPE after a similarity fit."""
    p, g = pred14.double(), gt14.double()
    mp = (p - g).norm(dim=-1).mean(dim=-1) * MM_PER_M
    pa, _ = pa_mpjpe(p, g)
    return {"mpjpe_14": mp.numpy(), "pa_mpjpe_14": pa.double().numpy()}


def spin_gt_joints14(s: np.ndarray, where: str = "S") -> np.ndarray:
    """SPIN's ground-truth 14 joints from its ``S`` array (N, 24, 4 or 3): ``S[:, J24_TO_J14, :3]``, metres."""
    arr = np.asarray(s)
    if arr.ndim != 3 or arr.shape[1] != 24 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected SPIN joints of shape (N, 24, 4), got {arr.shape}")
    out = arr[:, list(J24_TO_J14), :3].astype(np.float64)
    bad = ~np.isfinite(out).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{where}: row {int(np.flatnonzero(bad)[0])} holds NaN or inf among the 14 joints")
    if arr.shape[2] == 4:
        unlabelled = (arr[:, list(J24_TO_J14), 3] <= 0).any(axis=1)
        if unlabelled.any():
            raise ValueError(
                f"{where}: row {int(np.flatnonzero(unlabelled)[0])} has a zero confidence on one of the 14 joints "
                "(SPIN's H36M files label all of them)"
            )
    return out


def grouped_means(scores: SampleScores, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """Means per group label (a source, a description type), groups in sorted order."""
    labels = np.asarray(list(groups), dtype=object)
    if len(labels) != len(scores.sample_ids):
        raise ValueError(f"{len(labels)} group labels for {len(scores.sample_ids)} samples")
    return {
        str(g): scores.means(labels == g) | {"count": float((labels == g).sum())} for g in sorted(set(labels))
    }
