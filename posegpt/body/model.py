"""The SMPL body model: poses (axis-angle, 72) → joints, and on request the mesh.

``BodyModel`` wraps ``smplx.SMPL`` so that the mesh path is smplx's own. Its model
comes from one of two sources:

* a real SMPL file given by path: ``.npz`` (the arrays of an SMPL model) or the
  official ``.pkl`` (read without chumpy, see ``posegpt.body.smpl_pickle``);
* by default, the procedural body of ``posegpt.body.procedural``, generated on
  first use into ``<cache_dir>/body/`` and loaded through the same smplx code path.

Next to smplx's linear blend skinning, ``BodyModel.joints`` runs forward kinematics
on the joints alone (rest joints from the joint regressor and the shape, then the
chain of rotations), which is what metrics and training losses need; it agrees with
the mesh path's first 24 joints to 1e-5 and is far cheaper.

Frames: the model's own frame is SMPL's (y up, facing +z). Poses in the camera
frame of image data (y down) have a root near ``Rx(180°)``, which turns the body
upside down in this frame, as the data expects.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from posegpt.body.procedural import GENERATOR_VERSION, NUM_POSE_BASIS, NUM_VERTICES
from posegpt.body.skeleton import NUM_BETAS, NUM_JOINTS, PARENTS, POSE_DIM
from posegpt.geometry import axis_angle_to_rotmat
from posegpt.runtime import DEFAULT_CACHE_DIR

DEFAULT_BODY_FILE = f"{GENERATOR_VERSION}.npz"
"""File name of the generated default body inside ``<cache_dir>/body/`` (a new generator, a new file)."""


@dataclass
class BodyConfig:
    """Which body model turns poses into joints and meshes."""

    model_path: str | None = None
    """SMPL model file (``.pkl`` such as ``SMPL_NEUTRAL.pkl``, or ``.npz``); empty for the procedural default body."""


@dataclass
class BodyOutput:
    joints: Tensor
    """(B, 24, 3) joint positions in metres."""
    vertices: Tensor | None = None
    """(B, 6890, 3) mesh vertices in metres, when asked for."""


def default_body_path(cache_dir: str | Path | None = None) -> Path:
    """The procedural default body's file, generated on first use.

    Several processes may call this at once: each writes a temporary file and
    renames it into place, so a reader never sees a partial file.
    """
    folder = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser() / "body"
    path = folder / DEFAULT_BODY_FILE
    if path.is_file():
        return path
    from posegpt.body import procedural as procedural_body

    folder.mkdir(parents=True, exist_ok=True)
    data = procedural_body.generate()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".body-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_REQUIRED = ("v_template", "f", "weights", "J_regressor", "shapedirs", "posedirs", "kintree_table")


def load_body_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an SMPL model file (``.npz`` or ``.pkl``), checked and made dense.

    Returns ``v_template``, ``f``, ``weights``, ``J_regressor``, ``shapedirs`` (with
    exactly 10 shape directions, zero-padded if the file has fewer), ``posedirs`` and
    ``kintree_table``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SMPL model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                raw = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npz SMPL model ({exc})") from exc
    elif suffix == ".pkl":
        from posegpt.body.smpl_pickle import load_smpl_pickle

        raw = load_smpl_pickle(path)
    else:
        raise ValueError(f"{path}: unsupported SMPL model format {suffix!r} (expected .pkl or .npz)")
    return _checked(raw, path)


def _checked(raw: dict, path: Path) -> dict[str, np.ndarray]:
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path}: SMPL model lacks {missing}")
    out: dict[str, np.ndarray] = {}
    for key in _REQUIRED:
        try:
            out[key] = np.asarray(raw[key])
        except Exception as exc:
            raise ValueError(f"{path}: {key} is not an array ({exc})") from exc
    v = out["v_template"]
    if v.shape != (NUM_VERTICES, 3):
        raise ValueError(
            f"{path}: v_template must have shape ({NUM_VERTICES}, 3) (SMPL's mesh), got {v.shape}"
        )
    expected = {
        "weights": (NUM_VERTICES, NUM_JOINTS),
        "J_regressor": (NUM_JOINTS, NUM_VERTICES),
        "posedirs": (NUM_VERTICES, 3, NUM_POSE_BASIS),
        "kintree_table": (2, NUM_JOINTS),
    }
    for key, shape in expected.items():
        if out[key].shape != shape:
            raise ValueError(f"{path}: {key} must have shape {shape}, got {out[key].shape}")
    sd = out["shapedirs"]
    if sd.ndim != 3 or sd.shape[:2] != (NUM_VERTICES, 3) or sd.shape[2] < 1:
        raise ValueError(f"{path}: shapedirs must have shape ({NUM_VERTICES}, 3, n_betas), got {sd.shape}")
    if sd.shape[2] < NUM_BETAS:
        sd = np.concatenate([sd, np.zeros((NUM_VERTICES, 3, NUM_BETAS - sd.shape[2]))], axis=2)
    out["shapedirs"] = sd[:, :, :NUM_BETAS]
    for key in ("v_template", "weights", "J_regressor", "shapedirs", "posedirs"):
        arr = out[key]
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{path}: {key} must be numeric, got {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: {key} holds NaN or inf")
    f = out["f"]
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{path}: f must be an integer array of shape (F, 3), got {f.dtype} {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= NUM_VERTICES):
        raise ValueError(f"{path}: f indexes vertices outside [0, {NUM_VERTICES})")
    parents = out["kintree_table"][0].astype(np.int64)
    if tuple(int(p) for p in parents[1:]) != PARENTS[1:]:
        raise ValueError(f"{path}: kintree_table is not SMPL's joint tree (parents {parents.tolist()})")
    return out


def _check_input(x: Tensor | np.ndarray, name: str, width: int, batch: int | None = None) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != width or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, {width}) with B >= 1, got {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]} but poses has {batch}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold numbers, got {x.dtype}")
    if not torch.isfinite(x).all():
        row = int((~torch.isfinite(x)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name}: row {row} holds NaN or inf")
    return x


def _depth_order(parents: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, int, Tensor]]]:
    """Joints sorted by depth, the inverse permutation, each joint's parent (root: itself),
    and per depth below the root: its slice in that order and, for each joint of the
    slice, the position of its parent within the previous depth's slice."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    levels = [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]
    order = [j for level in levels for j in level]
    inverse = [order.index(j) for j in range(len(parents))]
    steps, start = [], len(levels[0])
    for prev, level in itertools.pairwise(levels):
        parent_idx = torch.as_tensor([prev.index(parents[j]) for j in level], dtype=torch.long)
        steps.append((start, start + len(level), parent_idx))
        start += len(level)
    parent_of = torch.as_tensor([max(p, 0) for p in parents], dtype=torch.long)
    return torch.as_tensor(order), torch.as_tensor(inverse), parent_of, steps


class BodyModel(nn.Module):
    """SMPL through ``smplx.SMPL``, with a joints-only forward kinematics path.

    ``model_path``: a real SMPL file (``.pkl``/``.npz``); ``None`` for the procedural
    default body, generated into ``<cache_dir>/body/`` (``cache_dir`` defaults to
    the project's ``.cache``).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        import smplx
        from smplx.utils import Struct

        self.is_procedural = model_path is None or str(model_path) == ""
        self.source = default_body_path(cache_dir) if self.is_procedural else Path(model_path).expanduser()
        data = load_body_arrays(self.source)
        # smplx prints a warning for every 10-beta model; it is expected here.
        with contextlib.redirect_stdout(io.StringIO()):
            self.smpl = smplx.SMPL(
                model_path=str(self.source),
                data_struct=Struct(**data),
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
                num_betas=NUM_BETAS,
                dtype=dtype,
            )
        self.faces = np.asarray(data["f"], dtype=np.int64)
        """(F, 3) triangle vertex indices."""
        # Rest joints and their shape directions, regressed once in float64.
        reg = data["J_regressor"].astype(np.float64)
        j_template = reg @ data["v_template"].astype(np.float64)
        j_shapedirs = np.einsum("jv,vcl->jcl", reg, data["shapedirs"].astype(np.float64))
        self.register_buffer("j_template", torch.as_tensor(j_template, dtype=dtype), persistent=False)
        self.register_buffer("j_shapedirs", torch.as_tensor(j_shapedirs, dtype=dtype), persistent=False)
        order, inverse, parent_of, steps = _depth_order(PARENTS)
        # Index buffers move with ``.to(device)`` like the arrays they index.
        self.register_buffer("_order", order, persistent=False)
        self.register_buffer("_inverse_order", inverse, persistent=False)
        self.register_buffer("_parent_of", parent_of, persistent=False)
        self._slices = [(start, stop) for start, stop, _ in steps]
        for k, (_, _, parent_idx) in enumerate(steps):
            self.register_buffer(f"_step_parents_{k}", parent_idx, persistent=False)

    @classmethod
    def from_config(cls, cfg: BodyConfig, cache_dir: str | Path | None = None) -> BodyModel:
        return cls(cfg.model_path or None, cache_dir=cache_dir)

    @property
    def dtype(self) -> torch.dtype:
        """Floating point type of the model's arrays (follows ``.to()`` / ``.double()``)."""
        return self.j_template.dtype

    @property
    def num_vertices(self) -> int:
        return int(self.smpl.v_template.shape[0])

    @property
    def skinning_weights(self) -> Tensor:
        """(6890, 24) linear blend skinning weights."""
        return self.smpl.lbs_weights

    def _inputs(
        self, poses: Tensor | np.ndarray, betas: Tensor | np.ndarray | None
    ) -> tuple[Tensor, Tensor | None]:
        p = _check_input(poses, "poses", POSE_DIM).to(device=self.j_template.device, dtype=self.dtype)
        if betas is None:
            return p, None
        b = _check_input(betas, "betas", NUM_BETAS, batch=p.shape[0]).to(device=p.device, dtype=self.dtype)
        return p, b

    def _rest(self, betas: Tensor | None, batch: int) -> Tensor:
        if betas is None:
            return self.j_template.expand(batch, NUM_JOINTS, 3)
        return self.j_template + torch.einsum("bl,jcl->bjc", betas, self.j_shapedirs)

    def rest_joints(self, betas: Tensor | np.ndarray | None = None) -> Tensor:
        """(B, 24, 3) joints of the rest (T) pose for ``betas`` (B, 10); (1, 24, 3) for betas 0."""
        if betas is None:
            return self._rest(None, 1)
        b = _check_input(betas, "betas", NUM_BETAS).to(device=self.j_template.device, dtype=self.dtype)
        return self._rest(b, b.shape[0])

    def joints(self, poses: Tensor | np.ndarray, betas: Tensor | np.ndarray | None = None) -> Tensor:
        """(B, 24, 3) joints by forward kinematics alone (no mesh); differentiable."""
        p, b = self._inputs(poses, betas)
        batch = p.shape[0]
        rest = self._rest(b, batch)
        # Work in depth order, so that each depth of the tree is one contiguous slice
        # whose parents all sit in the slice before it: one batched step per depth.
        local = axis_angle_to_rotmat(p.view(batch, NUM_JOINTS, 3)).index_select(1, self._order)
        bone = (rest - rest.index_select(1, self._parent_of)).index_select(1, self._order)
        rot, pos = local[:, :1], rest[:, :1]
        positions = [pos]
        for k, (start, stop) in enumerate(self._slices):
            idx = getattr(self, f"_step_parents_{k}")
            parent_rot, parent_pos = rot.index_select(1, idx), pos.index_select(1, idx)
            pos = parent_pos + (parent_rot @ bone[:, start:stop, :, None]).squeeze(-1)
            rot = parent_rot @ local[:, start:stop]
            positions.append(pos)
        return torch.cat(positions, dim=1).index_select(1, self._inverse_order)

    def mesh(self, poses: Tensor | np.ndarray, betas: Tensor | np.ndarray | None = None) -> BodyOutput:
        """smplx's full forward: joints (B, 24, 3) and vertices (B, 6890, 3)."""
        p, b = self._inputs(poses, betas)
        if b is None:
            b = torch.zeros(p.shape[0], NUM_BETAS, dtype=self.dtype, device=p.device)
        out = self.smpl(betas=b, global_orient=p[:, :3], body_pose=p[:, 3:], return_verts=True)
        return BodyOutput(joints=out.joints[:, :NUM_JOINTS], vertices=out.vertices)

    def forward(
        self,
        poses: Tensor | np.ndarray,
        betas: Tensor | np.ndarray | None = None,
        return_vertices: bool = False,
    ) -> BodyOutput:
        """Joints for ``poses`` (B, 72) and ``betas`` (B, 10) or None (zeros); vertices on request.

        Without vertices this takes the joints-only path; with them, smplx's mesh path.
        """
        if return_vertices:
            return self.mesh(poses, betas)
        return BodyOutput(joints=self.joints(poses, betas))


@functools.cache
def _shared_default(cache_dir: str) -> BodyModel:
    model = BodyModel(None, cache_dir=cache_dir)
    model.eval()
    return model


def default_body_model(cache_dir: str | Path | None = None) -> BodyModel:
    """One shared procedural ``BodyModel`` per process and cache folder (float32, CPU).

    Shared: callers must not move or modify it; build a ``BodyModel`` of their own for that.
    """
    folder = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser().resolve()
    return _shared_default(str(folder))


def vertex_part_labels(body: BodyModel) -> np.ndarray:
    """(6890,) int64: the joint (0-23, SMPL's order) whose skinning weight dominates each vertex.

    Body parts for per-part colours and masks, for the procedural body and a real SMPL alike.
    """
    return body.skinning_weights.argmax(dim=1).cpu().numpy().astype(np.int64)


__all__ = [
    "DEFAULT_BODY_FILE",
    "GENERATOR_VERSION",
    "BodyConfig",
    "BodyModel",
    "BodyOutput",
    "default_body_model",
    "default_body_path",
    "load_body_arrays",
    "vertex_part_labels",
]
