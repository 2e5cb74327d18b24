"""Per-sample pose errors and their aggregation (overall, per source, per description type).

The 24-joint metrics come from ``posegpt.metrics.pose_errors`` (body model joints,
betas 0). With an H36M joint regressor (SPIN's ``J_regressor_h36m.npy``, 17 × 6890)
the 14-joint protocol of SPIN is added: the 17 H36M joints are regressed from the
mesh vertices, the 14 of ``H36M_TO_J14`` kept, and both sets centred on the
midpoint of the hips (SPIN's evaluation) before MPJPE; PA-MPJPE aligns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from posegpt.body import BodyModel
from posegpt.metrics import MM_PER_M, pa_mpjpe, pose_errors

H36M_TO_J17: tuple[int, ...] = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
"""SPIN's order of the 17 H36M regressor joints (constants.H36M_TO_J17)."""
H36M_TO_J14: tuple[int, ...] = H36M_TO_J17[:14]
"""SPIN's 14 evaluation joints: ankles, knees, hips, wrists, elbows, shoulders, neck, head."""
J14_HIPS: tuple[int, int] = (2, 3)
"""Right and left hip inside the 14 joints; their midpoint is the pelvis of the protocol."""

METRIC_UNITS: dict[str, str] = {
    "mpjpe": "mm",
    "pa_mpjpe": "mm",
    "mpjre_x100": "rad×100",
    "mpjpe_14": "mm",
    "pa_mpjpe_14": "mm",
}
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
        """(N, 14, 3) SPIN evaluation joints regressed from the mesh (metres)."""
        assert self.h36m is not None
        out = []
        for i in range(0, len(poses), chunk):
            verts = self.body.mesh(torch.as_tensor(poses[i : i + chunk], dtype=torch.float32)).vertices
            j17 = torch.einsum("jv,bvc->bjc", self.h36m.to(verts.dtype), verts)
            out.append(j17[:, list(H36M_TO_J14)])
        return torch.cat(out)

    def h36m_errors(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
        jp, jg = self.joints14(pred), self.joints14(gt)
        pelvis_p = jp[:, list(J14_HIPS)].mean(dim=1, keepdim=True)
        pelvis_g = jg[:, list(J14_HIPS)].mean(dim=1, keepdim=True)
        mp = ((jp - pelvis_p) - (jg - pelvis_g)).norm(dim=-1).mean(dim=-1) * MM_PER_M
        pa, _ = pa_mpjpe(jp, jg)
        return {"mpjpe_14": mp.double().numpy(), "pa_mpjpe_14": pa.double().numpy()}


def grouped_means(scores: SampleScores, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """Means per group label (a source, a description type), groups in sorted order."""
    labels = np.asarray(list(groups), dtype=object)
    if len(labels) != len(scores.sample_ids):
        raise ValueError(f"{len(labels)} group labels for {len(scores.sample_ids)} samples")
    return {
        str(g): scores.means(labels == g) | {"count": float((labels == g).sum())} for g in sorted(set(labels))
    }
