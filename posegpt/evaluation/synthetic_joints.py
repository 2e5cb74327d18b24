"""Stand-ins for SPIN's H36M evaluation files, made from posed synthetic rows: a regressor and a joints-only npz.

The paper's H36M numbers come from SPIN's ``J_regressor_h36m.npy`` (17 × 6890,
licensed with SMPL) and ``h36m_valid_protocol2.npz`` (3D joints, no pose). The
synthetic world has neither, so the joints-only path is exercised end to end
with:

* ``body_h36m_regressor``: 17 rows of the body model's own SMPL joint regressor,
  one per H36M joint in the regressor's output order (the nearest SMPL joint:
  pelvis, hips, knees, ankles, spine, neck, head, shoulders, elbows, wrists);
* ``spin_joints_npz``: a SPIN npz with poses (``imgname``, ``center``, ``scale``,
  ``pose``, ``has_smpl``) turned into the protocol file's layout: the regressed
  17 joints of each posed row (betas 0), root-centred and placed into SPIN's 24
  ground-truth joints as ``datasets/preprocess/h36m.py`` places H36M's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from posegpt.body.model import BodyModel, load_body_arrays

H36M_FROM_SMPL: tuple[int, ...] = (0, 1, 4, 7, 2, 5, 8, 6, 12, 15, 15, 16, 18, 20, 17, 19, 21)
"""SMPL joint standing for each H36M regressor joint (0 pelvis, 1–3 left leg, 4–6 right leg, 7 spine,
8 thorax, 9 nose, 10 head, 11–13 left arm, 14–16 right arm, as SPIN's J24 names them)."""
H36M_TO_J24: tuple[int, ...] = (14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6)
"""Where SPIN's preprocessing puts each H36M joint among its 24 ground-truth joints (``global_idx``)."""


def body_h36m_regressor(body: BodyModel) -> np.ndarray:
    """(17, V) a regressor in SPIN's file layout, from ``body``'s SMPL joint regressor."""
    reg = load_body_arrays(body.source)["J_regressor"].astype(np.float32)
    return reg[list(H36M_FROM_SMPL)]


@torch.no_grad()
def spin_s24(body: BodyModel, regressor: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """(N, 24, 4) SPIN's ``S`` for ``poses`` (betas 0): regressed joints minus the pelvis, confidence 1."""
    verts = body.mesh(torch.as_tensor(poses, dtype=torch.float32)).vertices.double()
    j17 = torch.einsum("jv,bvc->bjc", torch.as_tensor(regressor, dtype=torch.float64), verts).numpy()
    j17 = j17 - j17[:, :1]
    s24 = np.zeros((len(poses), 24, 4))
    s24[:, list(H36M_TO_J24), :3] = j17
    s24[:, list(H36M_TO_J24), 3] = 1.0
    return s24


def spin_joints_npz(src: Path, out: Path, body: BodyModel, regressor: np.ndarray) -> int:
    """Write ``out`` (imgname, center, scale, S) from the posed rows of the SPIN npz ``src``; returns the rows written."""
    with np.load(src, allow_pickle=False) as data:
        missing = [k for k in ("imgname", "center", "scale", "pose") if k not in data.files]
        if missing:
            raise ValueError(f"{src}: missing arrays {missing} (a SPIN npz with poses is needed)")
        keep = np.ones(len(data["imgname"]), bool)
        if "has_smpl" in data.files:
            keep = np.asarray(data["has_smpl"]) > 0
        arrays = {k: np.asarray(data[k])[keep] for k in ("imgname", "center", "scale", "pose")}
    if not keep.any():
        raise ValueError(f"{src}: no row has a pose (has_smpl is 0 everywhere)")
    s = spin_s24(body, regressor, arrays["pose"])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, imgname=arrays["imgname"], center=arrays["center"], scale=arrays["scale"], S=s)
    return int(keep.sum())
