"""Rotation conversions and Procrustes against scipy; the 6D layout and the frame conversion pinned."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from posegpt.geometry import (
    axis_angle_to_rot6d,
    axis_angle_to_rotmat,
    geodesic_angle,
    procrustes_align,
    rot6d_to_axis_angle,
    rot6d_to_rotmat,
    rot_x,
    rot_z,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
    similarity_procrustes,
    yaw_zyx,
    zup_root_to_camera_frame,
)


def _random_rotvecs(n: int, seed: int) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_rotvec()


def _special_rotvecs() -> np.ndarray:
    """Angles at 0, tiny, just around the Taylor switch, and at/near π about several axes."""
    axes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3], [-1, -1, -1]], dtype=np.float64)
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = [0.0, 1e-9, 1e-6, 9.99e-4, 1.001e-3, 0.5, math.pi - 1e-4, math.pi - 1e-7, math.pi]
    return np.array([a * ax for a in angles for ax in axes])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_axis_angle_to_rotmat_matches_scipy(dtype: torch.dtype) -> None:
    rv = np.concatenate([_random_rotvecs(200, 0), _special_rotvecs()])
    ours = axis_angle_to_rotmat(torch.from_numpy(rv).to(dtype))
    assert ours.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(ours.double().numpy(), Rotation.from_rotvec(rv).as_matrix(), atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotmat_to_axis_angle_round_trip(dtype: torch.dtype) -> None:
    rv = np.concatenate([_random_rotvecs(200, 1), _special_rotvecs()])
    mats = torch.from_numpy(Rotation.from_rotvec(rv).as_matrix()).to(dtype)
    back = rotmat_to_axis_angle(mats)
    assert back.dtype == dtype
    # Compare as rotations: at π, v and −v are the same rotation.
    tol = 2e-6 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(axis_angle_to_rotmat(back).double().numpy(), mats.double().numpy(), atol=tol)
    angles = back.double().norm(dim=-1).numpy()
    assert (angles <= math.pi + 1e-6).all()
    np.testing.assert_allclose(angles, Rotation.from_matrix(mats.double().numpy()).magnitude(), atol=10 * tol)
    # Away from π the vector itself comes back.
    ok = np.linalg.norm(rv, axis=1) < math.pi - 1e-3
    np.testing.assert_allclose(back.double().numpy()[ok], rv[ok], atol=10 * tol)


def test_6d_layout_is_first_two_columns() -> None:
    mats = torch.from_numpy(Rotation.random(50, random_state=2).as_matrix())
    six = rotmat_to_rot6d(mats)
    torch.testing.assert_close(six, torch.cat([mats[:, :, 0], mats[:, :, 1]], dim=-1))
    # Not SPIN's interleaved layout (rows of the 3×2 block).
    interleaved = mats[:, :, :2].reshape(-1, 6)
    assert not torch.allclose(six, interleaved)
    torch.testing.assert_close(rot6d_to_rotmat(six), mats)
    # Gram–Schmidt: the first column keeps its direction, the second is made orthogonal to it.
    raw = torch.tensor([[2.0, 0.0, 0.0, 1.0, 3.0, 0.0]], dtype=torch.float64)
    r = rot6d_to_rotmat(raw)[0]
    torch.testing.assert_close(r[:, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(r[:, 1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(r[:, 2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_rot6d_gram_schmidt_gives_rotations_for_any_input() -> None:
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    r = rot6d_to_rotmat(x)
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(r.transpose(-1, -2) @ r, eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(500, dtype=torch.float64))


def test_any_leading_dims() -> None:
    aa = torch.randn(2, 3, 24, 3, generator=torch.Generator().manual_seed(4))
    r = axis_angle_to_rotmat(aa)
    assert r.shape == (2, 3, 24, 3, 3)
    torch.testing.assert_close(r.reshape(-1, 3, 3), axis_angle_to_rotmat(aa.reshape(-1, 3)))
    assert rotmat_to_axis_angle(r).shape == (2, 3, 24, 3)
    six = axis_angle_to_rot6d(aa)
    assert six.shape == (2, 3, 24, 6)
    torch.testing.assert_close(axis_angle_to_rotmat(rot6d_to_axis_angle(six)), r, atol=2e-6, rtol=0)
    assert geodesic_angle(r, r).shape == (2, 3, 24)


def test_gradients_finite_at_zero_and_pi() -> None:
    aa = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_rotmat(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    # d R / d v at 0 is the skew map: dR[2,1]/dv_x = 1.
    aa0 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_rotmat(aa0)[2, 1].backward()
    torch.testing.assert_close(aa0.grad, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    for start in (torch.eye(3), rot_x(math.pi)):
        m = start.clone().double().requires_grad_(True)
        rotmat_to_axis_angle(m).sum().backward()
        assert torch.isfinite(m.grad).all()
        m6 = rotmat_to_rot6d(start.double()).requires_grad_(True)
        rot6d_to_axis_angle(m6).square().sum().backward()
        assert torch.isfinite(m6.grad).all()


def test_geodesic_angle_matches_scipy_near_0_and_pi() -> None:
    rv = np.concatenate([_random_rotvecs(100, 5), _special_rotvecs()])
    a = Rotation.random(len(rv), random_state=6)
    b = a * Rotation.from_rotvec(rv)
    ours = geodesic_angle(torch.from_numpy(a.as_matrix()), torch.from_numpy(b.as_matrix()))
    np.testing.assert_allclose(ours.numpy(), np.linalg.norm(rv, axis=1), atol=1e-7)


def test_yaw_and_zup_root_to_camera_frame() -> None:
    # Yaw of Rz(a)·Ry(b)·Rx(c) is a.
    for a, b, c in [(0.3, -0.2, 1.1), (-2.5, 0.4, -0.3), (3.0, 0.0, 1.5708)]:
        r = Rotation.from_euler("ZYX", [a, b, c]).as_matrix()
        assert float(yaw_zyx(torch.from_numpy(r))) == pytest.approx(a, abs=1e-9)
    # An AMASS upright root (Rx(90°) under any yaw about world z) becomes ≈ Rx(180°).
    target = rot_x(math.pi, dtype=torch.float64)
    for yaw in np.linspace(-3.0, 3.0, 13):
        root = rot_z(float(yaw), dtype=torch.float64) @ rot_x(math.pi / 2, dtype=torch.float64)
        cam = zup_root_to_camera_frame(rotmat_to_axis_angle(root))
        assert float(geodesic_angle(axis_angle_to_rotmat(cam), target)) < 1e-6
    # Lean and roll survive, only the yaw goes: Rx(90°)·Ry(b)·Rx(c) for Rz(a)·Ry(b)·Rx(c).
    r = Rotation.from_euler("ZYX", [1.0, 0.2, 1.3]).as_matrix()
    cam = axis_angle_to_rotmat(zup_root_to_camera_frame(rotmat_to_axis_angle(torch.from_numpy(r))))
    expected = (
        rot_x(math.pi / 2, dtype=torch.float64).numpy()
        @ Rotation.from_euler("ZYX", [0.0, 0.2, 1.3]).as_matrix()
    )
    np.testing.assert_allclose(cam.numpy(), expected, atol=1e-9)
    batch = zup_root_to_camera_frame(torch.zeros(2, 5, 3))
    assert batch.shape == (2, 5, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_similarity_procrustes_recovers_transform(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 24, 3))
    rot = Rotation.random(6, random_state=8).as_matrix()
    s = rng.uniform(0.5, 2.0, size=6)
    t = rng.normal(size=(6, 3))
    y = s[:, None, None] * x @ rot.transpose(0, 2, 1) + t[:, None]
    scale, r, trans = similarity_procrustes(torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype))
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    np.testing.assert_allclose(scale.double().numpy(), s, atol=tol)
    np.testing.assert_allclose(r.double().numpy(), rot, atol=tol)
    np.testing.assert_allclose(trans.double().numpy(), t, atol=tol)
    np.testing.assert_allclose(
        procrustes_align(torch.from_numpy(x), torch.from_numpy(y)).numpy(), y, atol=1e-9
    )
    # A mirrored target still gets a proper rotation (det +1).
    _, r_m, _ = similarity_procrustes(torch.from_numpy(x), torch.from_numpy(x * np.array([-1.0, 1.0, 1.0])))
    np.testing.assert_allclose(torch.linalg.det(r_m).numpy(), 1.0, atol=1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: axis_angle_to_rotmat(torch.zeros(4, 2)), r"axis_angle must have shape \(\.\.\., 3\)"),
        (lambda: rotmat_to_rot6d(torch.zeros(4, 3, 2)), r"rotmat must have shape \(\.\.\., 3, 3\)"),
        (lambda: rot6d_to_rotmat(torch.zeros(4, 5)), r"rot6d must have shape"),
        (lambda: axis_angle_to_rotmat(np.zeros((4, 3))), r"must be a torch.Tensor"),
        (lambda: axis_angle_to_rotmat(torch.zeros(4, 3, dtype=torch.long)), r"floating point"),
        (lambda: similarity_procrustes(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3)), r"same shape"),
    ],
)
def test_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
