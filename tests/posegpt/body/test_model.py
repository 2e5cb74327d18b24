"""The body model: the procedural default, real-file readers, joints-only FK, frames, bad input."""

from __future__ import annotations

import math
import os
import pickle
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from posegpt.body.model import (
    BodyConfig,
    BodyModel,
    default_body_model,
    default_body_path,
    load_body_arrays,
    vertex_part_labels,
)
from posegpt.body.procedural import generate, rest_joints
from posegpt.body.skeleton import JOINT_INDEX, NUM_JOINTS, PARENTS
from posegpt.geometry import (
    axis_angle_to_rotmat,
    rot_x,
    rot_z,
    rotmat_to_axis_angle,
    zup_root_to_camera_frame,
)

HEAD, PELVIS = JOINT_INDEX["head"], JOINT_INDEX["pelvis"]


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return default_body_model()


@pytest.fixture(scope="module")
def arrays(body: BodyModel) -> dict[str, np.ndarray]:
    return load_body_arrays(body.source)


def _random_poses(n: int, seed: int, scale: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 72, generator=g) * scale


def test_default_body_loads_through_smplx(body: BodyModel) -> None:
    import smplx

    assert isinstance(body.smpl, smplx.SMPL)
    assert body.is_procedural and body.source.name.endswith(".npz")
    assert body.num_vertices == 6890
    assert body.faces.shape[1] == 3 and body.faces.min() == 0 and body.faces.max() == 6889
    out = body(torch.zeros(2, 72), return_vertices=True)
    assert out.vertices is not None and out.vertices.shape == (2, 6890, 3)
    assert out.joints.shape == (2, 24, 3)
    # Every vertex belongs to a face, and each part is a closed surface: every edge is shared by two faces.
    assert len(np.unique(body.faces)) == 6890
    edges = np.sort(body.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()


def test_joints_only_matches_mesh_joints(body: BodyModel) -> None:
    poses = _random_poses(32, seed=0)
    betas = torch.randn(32, 10, generator=torch.Generator().manual_seed(1))
    for b in (None, betas):
        fast = body.joints(poses, b)
        mesh = body.mesh(poses, b).joints
        assert fast.shape == (32, 24, 3)
        torch.testing.assert_close(fast, mesh, atol=1e-5, rtol=0)
    # forward without vertices takes the joints-only path, with them the mesh path.
    torch.testing.assert_close(
        body(poses).joints, body(poses, return_vertices=True).joints, atol=1e-5, rtol=0
    )


def test_joints_only_matches_independent_forward_kinematics(
    body: BodyModel, arrays: dict[str, np.ndarray]
) -> None:
    """Against a plain per-joint loop in float64 with rotations from scipy."""
    from scipy.spatial.transform import Rotation

    poses = _random_poses(4, seed=2).double()
    rest = arrays["J_regressor"] @ arrays["v_template"]
    expected = np.zeros((4, 24, 3))
    for n in range(4):
        rots = Rotation.from_rotvec(poses[n].view(24, 3).numpy()).as_matrix()
        world_r = [rots[0]] + [None] * 23
        expected[n, 0] = rest[0]
        for j in range(1, NUM_JOINTS):
            p = PARENTS[j]
            expected[n, j] = expected[n, p] + world_r[p] @ (rest[j] - rest[p])
            world_r[j] = world_r[p] @ rots[j]
    np.testing.assert_allclose(body.joints(poses).double().numpy(), expected, atol=1e-5)


def test_joints_are_differentiable(body: BodyModel) -> None:
    poses = _random_poses(3, seed=3).requires_grad_(True)
    poses.data[:, 3:6] = 0.0  # a joint at exactly angle 0
    body.joints(poses).square().sum().backward()
    assert poses.grad is not None and torch.isfinite(poses.grad).all()
    assert poses.grad.abs().sum() > 0


def test_regressor_reproduces_rest_joints(body: BodyModel, arrays: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(arrays["J_regressor"] @ arrays["v_template"], rest_joints(), atol=1e-9)
    np.testing.assert_allclose(body.rest_joints()[0].double().numpy(), rest_joints(), atol=1e-6)
    # Zero pose: the joints are the rest joints; shape moves them like the regressed shaped mesh.
    betas = torch.zeros(1, 10)
    betas[0, 0] = 2.0
    shaped = arrays["v_template"] + arrays["shapedirs"] @ betas[0].double().numpy()
    np.testing.assert_allclose(
        body.joints(torch.zeros(1, 72), betas)[0].double().numpy(), arrays["J_regressor"] @ shaped, atol=1e-5
    )


def test_shape_directions_mean_something(body: BodyModel) -> None:
    def height(betas: torch.Tensor) -> float:
        v = body.mesh(torch.zeros(1, 72), betas).vertices[0]
        return float(v[:, 1].max() - v[:, 1].min())

    def waist(betas: torch.Tensor) -> float:
        v = body.mesh(torch.zeros(1, 72), betas).vertices[0]
        band = (v[:, 1] > 0.1) & (v[:, 1] < 0.2) & (v[:, 0].abs() < 0.25)
        return float(v[band, 0].max() - v[band, 0].min())

    zero = torch.zeros(1, 10)
    tall, wide = zero.clone(), zero.clone()
    tall[0, 0], wide[0, 1] = 2.0, 2.0
    assert height(tall) > height(zero) * 1.08
    assert waist(wide) > waist(zero) * 1.05
    assert abs(height(wide) - height(zero)) < 0.03


def test_generation_is_deterministic_and_cached(tmp_path: Path) -> None:
    # Two threads generating into one fresh folder at once: both see one complete file,
    # equal, array for array, to an independent generation in this thread.
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(default_body_path(tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 2 and len(set(paths)) == 1
    assert sorted(p.name for p in (tmp_path / "body").iterdir()) == [paths[0].name]
    fresh = generate()
    with np.load(paths[0]) as stored:
        assert sorted(stored.files) == sorted(fresh)
        for key in stored.files:
            np.testing.assert_array_equal(stored[key], fresh[key], err_msg=key)
    mtime = os.stat(paths[0]).st_mtime_ns
    assert default_body_path(tmp_path) == paths[0] and os.stat(paths[0]).st_mtime_ns == mtime


def test_rest_pose_frame_is_smpl(body: BodyModel) -> None:
    """y up, facing +z, the person's left on +x (SMPL's own frame)."""
    j = body.joints(torch.zeros(1, 72))[0]
    assert j[HEAD, 1] - j[PELVIS, 1] > 0.4
    assert j[JOINT_INDEX["left_ankle"], 1] < j[PELVIS, 1] - 0.7
    assert j[JOINT_INDEX["left_hip"], 0] > 0 > j[JOINT_INDEX["right_hip"], 0]
    assert j[JOINT_INDEX["left_wrist"], 0] > 0.5  # T pose
    # The feet point forward (+z) and the nose sticks out in front of the head.
    assert j[JOINT_INDEX["left_foot"], 2] > j[JOINT_INDEX["left_ankle"], 2] + 0.05
    v = body.mesh(torch.zeros(1, 72)).vertices[0]
    head_verts = v[torch.as_tensor(vertex_part_labels(body) == HEAD)]
    assert head_verts[:, 2].max() > j[HEAD, 2] + 0.09
    assert head_verts[:, 2].min() > j[HEAD, 2] - 0.1


def test_camera_frame_root_turns_the_body_upside_down(body: BodyModel) -> None:
    """Image data (y down) has an upright person's root near Rx(180°): head below pelvis along y."""
    pose = torch.zeros(2, 72)
    pose[0, :3] = torch.tensor([math.pi, 0.0, 0.0])
    # A PoseScript/AMASS upright root (z-up world, any yaw), converted as DESIGN.md says.
    amass_root = rotmat_to_axis_angle(rot_z(0.7) @ rot_x(math.pi / 2))
    pose[1, :3] = zup_root_to_camera_frame(amass_root)
    j = body.joints(pose)
    assert (j[:, HEAD, 1] - j[:, PELVIS, 1] < -0.4).all()
    # Rx(180°) turns the face from +z to −z: towards a camera that looks along +z.
    assert (j[:, JOINT_INDEX["left_foot"], 2] < j[:, JOINT_INDEX["left_ankle"], 2]).all()
    # The person's left stays on +x.
    assert (j[:, JOINT_INDEX["left_hip"], 0] > 0).all()


def test_vertex_part_labels(body: BodyModel) -> None:
    labels = vertex_part_labels(body)
    assert labels.shape == (6890,) and labels.dtype == np.int64
    assert set(labels.tolist()) == set(range(24))
    v = body.mesh(torch.zeros(1, 72)).vertices[0].numpy()
    j = body.joints(torch.zeros(1, 72))[0].numpy()
    left_hand = v[labels == JOINT_INDEX["left_hand"]]
    assert (left_hand[:, 0] > j[JOINT_INDEX["left_wrist"], 0]).all()
    shin = v[labels == JOINT_INDEX["right_knee"]]
    assert (shin[:, 0] < 0).all() and shin[:, 1].mean() < j[JOINT_INDEX["right_knee"], 1]


def test_shared_default_and_config(body: BodyModel, tmp_path: Path) -> None:
    assert default_body_model() is body
    from_cfg = BodyModel.from_config(BodyConfig(model_path=str(body.source)))
    assert not from_cfg.is_procedural
    poses = _random_poses(2, seed=4)
    torch.testing.assert_close(from_cfg.joints(poses), body.joints(poses))


# --- official .pkl files without chumpy -------------------------------------------------


def _fake_chumpy_modules() -> dict[str, types.ModuleType]:
    """Modules named like chumpy's, with classes pickled the way chumpy's are (state in __dict__)."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")
    reordering = types.ModuleType("chumpy.reordering")
    ch_ops = types.ModuleType("chumpy.ch_ops")

    class Ch:
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars: set[str] = set()
            self._itr = None

    class Select:
        def __init__(self, a: Ch, idxs: np.ndarray, preferred_shape: tuple[int, ...]) -> None:
            self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape

    class add:  # chumpy's own (lower-case) class name
        def __init__(self, a: Ch, b: Ch) -> None:
            self.a, self.b = a, b

    for cls, mod in ((Ch, ch), (Select, reordering), (add, ch_ops)):
        cls.__module__ = mod.__name__
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    chumpy.ch, chumpy.reordering, chumpy.ch_ops = ch, reordering, ch_ops
    return {"chumpy": chumpy, "chumpy.ch": ch, "chumpy.reordering": reordering, "chumpy.ch_ops": ch_ops}


def _dump_with_fake_chumpy(path: Path, build, protocol: int = 2) -> None:
    """Pickle ``build(modules)`` while the fake chumpy modules are importable, then remove them."""
    modules = _fake_chumpy_modules()
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        with path.open("wb") as f:
            pickle.dump(build(modules), f, protocol=protocol)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _official_like(modules: dict[str, types.ModuleType], arrays: dict[str, np.ndarray]) -> dict[str, object]:
    """The layout of an official SMPL pickle: chumpy arrays, a sparse regressor, numpy arrays, strings."""
    ch, select = modules["chumpy.ch"].Ch, modules["chumpy.reordering"].Select
    shapedirs = arrays["shapedirs"]
    # shapedirs as chumpy's Select of a flat Ch, as some official files hold it.
    flat = ch(shapedirs.ravel()[::-1].copy())
    idxs = np.arange(shapedirs.size)[::-1].copy()
    return {
        "v_template": ch(arrays["v_template"]),
        "weights": ch(arrays["weights"]),
        "posedirs": ch(arrays["posedirs"]),
        "shapedirs": select(flat, idxs, shapedirs.shape),
        "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"]),
        "J": arrays["J_regressor"] @ arrays["v_template"],
        "f": arrays["f"].astype(np.uint32),
        "kintree_table": arrays["kintree_table"],
        "bs_type": "lrotmin",
        "bs_style": "lbs",
    }


@pytest.mark.parametrize("protocol", [1, 2])
def test_reads_official_pickle_without_chumpy(
    protocol: int, tmp_path: Path, body: BodyModel, arrays: dict[str, np.ndarray]
) -> None:
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    _dump_with_fake_chumpy(path, lambda modules: _official_like(modules, arrays), protocol)
    assert "chumpy" not in sys.modules
    loaded = load_body_arrays(path)
    for key in ("v_template", "weights", "posedirs", "shapedirs", "J_regressor"):
        assert type(loaded[key]) is np.ndarray, key
        np.testing.assert_array_equal(loaded[key], arrays[key], err_msg=key)
    real = BodyModel(path)
    poses = _random_poses(4, seed=5)
    betas = torch.randn(4, 10, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(real.joints(poses, betas), body.joints(poses, betas))
    torch.testing.assert_close(real.mesh(poses, betas).vertices, body.mesh(poses, betas).vertices)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_pickle_with_unexpected_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    _dump_with_fake_chumpy(
        path, lambda modules: {"v_template": modules["chumpy.ch"].Ch(np.zeros(3)), "extra": _Evil()}
    )
    with pytest.raises(ValueError, match=r"evil\.pkl.*refusing.*getcwd"):
        load_body_arrays(path)


def test_chumpy_expression_without_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "expr.pkl"

    def expression(modules: dict[str, types.ModuleType]) -> dict[str, object]:
        ch = modules["chumpy.ch"].Ch
        return {"v_template": modules["chumpy.ch_ops"].add(ch(np.ones(3)), ch(np.ones(3)))}

    _dump_with_fake_chumpy(path, expression)
    with pytest.raises(ValueError, match=r"expr\.pkl.*chumpy\.ch_ops\.add"):
        load_body_arrays(path)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("poses", "betas", "message"),
    [
        (torch.zeros(2, 69), None, r"poses must have shape \(B, 72\)"),
        (torch.zeros(72), None, r"poses must have shape"),
        (torch.zeros(0, 72), None, r"poses must have shape"),
        (torch.zeros(2, 72), torch.zeros(2, 9), r"betas must have shape \(B, 10\)"),
        (torch.zeros(2, 72), torch.zeros(1, 10), r"betas has batch size 1 but poses has 2"),
        (torch.full((2, 72), float("nan")), None, r"poses: row 0 holds NaN or inf"),
        (
            torch.zeros(2, 72),
            torch.tensor([[0.0] * 10, [float("inf")] + [0.0] * 9]),
            r"betas: row 1 holds NaN or inf",
        ),
        ([[0.0] * 72], None, r"poses must be a torch.Tensor or numpy array"),
    ],
)
def test_bad_inputs_name_the_argument(body: BodyModel, poses: object, betas: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        body.joints(poses, betas)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        body.mesh(poses, betas)  # type: ignore[arg-type]


def test_missing_or_broken_model_files_name_the_file(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pkl"):
        BodyModel(tmp_path / "nope.pkl")
    for name, content in (
        ("garbage.npz", b"not a zip"),
        ("garbage.pkl", b"\x80\x02garbage"),
        ("empty.pkl", b""),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            BodyModel(tmp_path / name)
    (tmp_path / "model.obj").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"model\.obj.*unsupported"):
        BodyModel(tmp_path / "model.obj")
    partial = {k: v for k, v in arrays.items() if k != "weights"}
    np.savez(tmp_path / "partial.npz", **partial)
    with pytest.raises(ValueError, match=r"partial\.npz.*weights"):
        BodyModel(tmp_path / "partial.npz")
    broken = dict(arrays)
    broken["v_template"] = arrays["v_template"].copy()
    broken["v_template"][10, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **broken)
    with pytest.raises(ValueError, match=r"nan\.npz: v_template holds NaN"):
        BodyModel(tmp_path / "nan.npz")
    small = dict(arrays)
    small["v_template"] = arrays["v_template"][:100]
    np.savez(tmp_path / "small.npz", **small)
    with pytest.raises(ValueError, match=r"small\.npz: v_template must have shape \(6890, 3\)"):
        BodyModel(tmp_path / "small.npz")


def test_camera_frame_root_is_rx180(body: BodyModel) -> None:
    """Cross-check of the frame test above: Rx(180°) flips y and z of every joint about the pelvis."""
    pose = torch.zeros(1, 72)
    pose[0, :3] = rotmat_to_axis_angle(rot_x(math.pi))
    flipped = body.joints(pose)[0]
    rest = body.joints(torch.zeros(1, 72))[0]
    r = axis_angle_to_rotmat(pose[0, :3])
    torch.testing.assert_close(flipped - flipped[0], (rest - rest[0]) @ r.T, atol=1e-6, rtol=0)


def test_float64_model_follows_to(body: BodyModel) -> None:
    double = BodyModel(body.source).double()
    poses = _random_poses(3, seed=8)
    out = double.joints(poses)
    assert out.dtype == torch.float64 and double.mesh(poses).vertices.dtype == torch.float64
    torch.testing.assert_close(out, body.joints(poses).double(), atol=1e-5, rtol=0)
