"""Metrics against independent computations (scipy) and known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial import procrustes
from scipy.spatial.transform import Rotation

from posegpt.body.model import BodyModel, default_body_model
from posegpt.metrics import mpjpe, mpjre, pa_mpjpe, pose_errors, recall_at_k


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return default_body_model()


def _pair(n: int, seed: int, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """gt joints (n, 24, 3) and predictions = a random similarity transform of gt plus noise."""
    rng = np.random.default_rng(seed)
    gt = rng.normal(0.0, 0.3, size=(n, 24, 3))
    rot = Rotation.random(n, random_state=seed).as_matrix()
    scale = rng.uniform(0.7, 1.4, size=(n, 1, 1))
    shift = rng.normal(0.0, 1.0, size=(n, 1, 3))
    pred = scale * gt @ rot.transpose(0, 2, 1) + shift + rng.normal(0.0, noise, size=gt.shape)
    return pred, gt


def test_mpjpe_subtracts_the_pelvis_and_reports_mm() -> None:
    pred, gt = _pair(16, seed=0)
    per, mean = mpjpe(pred, gt)
    expected = np.linalg.norm((pred - pred[:, :1]) - (gt - gt[:, :1]), axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(per.numpy(), expected, rtol=1e-12)
    assert math.isclose(float(mean), expected.mean(), rel_tol=1e-12)
    # A translated copy has zero error; one joint 10 cm off (not the pelvis) gives 100/24 mm.
    shifted = gt + np.array([1.0, -2.0, 0.5])
    assert float(mpjpe(shifted, gt)[1]) == pytest.approx(0.0, abs=1e-9)
    moved = gt.copy()
    moved[:, 5, 0] += 0.1
    np.testing.assert_allclose(mpjpe(moved, gt)[0].numpy(), 100.0 / 24, rtol=1e-9)


def test_pa_mpjpe_matches_scipy_procrustes() -> None:
    pred, gt = _pair(12, seed=1)
    per, mean = pa_mpjpe(torch.from_numpy(pred), torch.from_numpy(gt))
    expected = []
    for p, g in zip(pred, gt, strict=True):
        # scipy standardises both sets (centroid 0, Frobenius norm 1) and fits pred onto gt.
        _, aligned_std, _ = procrustes(g, p)
        g0 = g - g.mean(0)
        aligned = aligned_std * np.linalg.norm(g0) + g.mean(0)
        expected.append(np.linalg.norm(aligned - g, axis=-1).mean() * 1000)
    np.testing.assert_allclose(per.numpy(), expected, rtol=1e-7)
    assert float(mean) == pytest.approx(np.mean(expected), rel=1e-7)


def test_pa_mpjpe_matches_orthogonal_procrustes() -> None:
    pred, gt = _pair(8, seed=2, noise=0.1)
    per, _ = pa_mpjpe(pred, gt)
    for i, (p, g) in enumerate(zip(pred, gt, strict=True)):
        p0, g0 = p - p.mean(0), g - g.mean(0)
        r, sigma_sum = orthogonal_procrustes(p0, g0)
        assert np.linalg.det(r) > 0  # small noise: the best orthogonal map is a rotation
        aligned = sigma_sum / (p0**2).sum() * p0 @ r + g.mean(0)
        assert float(per[i]) == pytest.approx(np.linalg.norm(aligned - g, axis=-1).mean() * 1000, rel=1e-7)


def test_pa_mpjpe_known_cases() -> None:
    pred, gt = _pair(6, seed=3, noise=0.0)
    # A pure similarity transform (rotation, scale, translation) gives 0; MPJPE does not.
    assert float(pa_mpjpe(pred, gt)[1]) == pytest.approx(0.0, abs=1e-6)
    assert float(mpjpe(pred, gt)[1]) > 10.0
    # A mirror image is not a rotation: PA-MPJPE must stay well above 0.
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert float(pa_mpjpe(mirrored, gt)[1]) > 50.0
    # float32 input works and agrees with float64.
    np.testing.assert_allclose(
        pa_mpjpe(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())[0].numpy(), 0.0, atol=1e-2
    )


def test_mpjre_matches_scipy_rotation() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 0.8, size=(10, 72))
    b = rng.normal(0.0, 0.8, size=(10, 72))
    per, mean = mpjre(a, b)
    ra = Rotation.from_rotvec(a.reshape(-1, 3))
    rb = Rotation.from_rotvec(b.reshape(-1, 3))
    expected = (ra.inv() * rb).magnitude().reshape(10, 24).mean(-1)
    np.testing.assert_allclose(per.numpy(), expected, atol=1e-9)
    assert float(mean) == pytest.approx(expected.mean(), abs=1e-9)
    # Rotation matrices give the same, and the arccos formula of DESIGN.md agrees.
    ma = torch.from_numpy(ra.as_matrix().reshape(10, 24, 3, 3))
    mb = torch.from_numpy(rb.as_matrix().reshape(10, 24, 3, 3))
    np.testing.assert_allclose(mpjre(ma, mb)[0].numpy(), expected, atol=1e-9)
    trace = np.einsum("nji,nji->n", ma.reshape(-1, 3, 3).numpy(), mb.reshape(-1, 3, 3).numpy())
    arccos = np.arccos(np.clip((trace - 1) / 2, -1, 1)).reshape(10, 24).mean(-1)
    np.testing.assert_allclose(per.numpy(), arccos, atol=1e-6)


def test_mpjre_known_cases() -> None:
    pose = torch.randn(3, 72, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert float(mpjre(pose, pose)[1]) == pytest.approx(0.0, abs=1e-7)
    # One joint off by 90° about x: mean over 24 joints is (π/2)/24.
    other = pose.clone()
    other[:, 3:6] = 0.0
    turned = other.clone()
    turned[:, 3] = math.pi / 2
    np.testing.assert_allclose(mpjre(other, turned)[0].numpy(), (math.pi / 2) / 24, atol=1e-9)
    # Axis-angle 2π is the identity: no error.
    full_turn = other.clone()
    full_turn[:, 3] = 2 * math.pi
    np.testing.assert_allclose(mpjre(other, full_turn)[0].numpy(), 0.0, atol=1e-6)


def test_recall_at_k() -> None:
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.2],  # match ranked 1st
            [0.8, 0.5, 0.7, 0.1],  # 3rd
            [0.0, 0.1, 0.2, 0.3],  # 2nd
            [0.4, 0.4, 0.4, 0.4],  # ties: counted as 1st
        ]
    )
    assert recall_at_k(sim, 1)[0].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert recall_at_k(sim, 2)[0].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert float(recall_at_k(sim, 3)[1]) == 1.0
    # Targets other than the diagonal, rectangular gallery.
    rect = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.6, 0.7]])
    hits, mean = recall_at_k(rect, 1, targets=[1, 0])
    assert hits.tolist() == [1.0, 0.0] and float(mean) == 0.5
    # Against a brute-force count on random data.
    rng = np.random.default_rng(6)
    big = rng.normal(size=(50, 50))
    for k in (1, 5, 10):
        order = np.argsort(-big, axis=1)[:, :k]
        expected = np.mean([i in order[i] for i in range(50)])
        assert float(recall_at_k(big, k)[1]) == pytest.approx(expected)


def test_pose_errors_through_the_body(body: BodyModel) -> None:
    g = torch.Generator().manual_seed(7)
    gt = torch.randn(5, 72, generator=g) * 0.4
    pred = gt + torch.randn(5, 72, generator=g) * 0.1
    errors = pose_errors(pred, gt, body=body)
    jp, jg = body.joints(pred).double(), body.joints(gt).double()
    np.testing.assert_allclose(errors.mpjpe, mpjpe(jp, jg)[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(errors.pa_mpjpe, pa_mpjpe(jp, jg)[0].numpy(), rtol=1e-4)
    np.testing.assert_allclose(errors.mpjre, mpjre(pred.double(), gt.double())[0].numpy(), atol=1e-5)
    means = errors.means()
    assert means["mpjre_x100"] == pytest.approx(100 * means["mpjre"])
    assert 0 < means["pa_mpjpe"] < means["mpjpe"]
    # A different global orientation alone: PA-MPJPE 0 (Procrustes removes it), MPJPE and MPJRE not.
    turned = gt.clone()
    turned[:, :3] = torch.tensor([0.0, 1.2, 0.0])
    same_body = pose_errors(turned, gt, body=body)
    np.testing.assert_allclose(same_body.pa_mpjpe, 0.0, atol=0.05)
    assert (same_body.mpjpe > 50).all() and (same_body.mpjre > 0).all()
    exact = pose_errors(gt, gt, body=body)
    assert max(exact.mpjpe.max(), exact.pa_mpjpe.max(), exact.mpjre.max()) < 1e-3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mpjpe(np.zeros((2, 24, 3)), np.zeros((3, 24, 3))), r"must have the same shape"),
        (lambda: mpjpe(np.zeros((2, 24)), np.zeros((2, 24))), r"pred_joints must have shape \(B, J, 3\)"),
        (
            lambda: pa_mpjpe(np.zeros((2, 24, 3)), np.full((2, 24, 3), np.nan)),
            r"gt_joints: sample 0 holds NaN",
        ),
        (lambda: pa_mpjpe(np.zeros((1, 2, 3)), np.zeros((1, 2, 3))), r"at least 3 joints"),
        (lambda: mpjre(np.zeros((2, 69)), np.zeros((2, 69))), r"pred_poses must be axis-angle poses"),
        (lambda: mpjre(np.zeros((2, 72)), np.zeros((3, 72))), r"same batch size"),
        (lambda: recall_at_k(np.zeros((3, 4)), 1), r"give targets"),
        (lambda: recall_at_k(np.zeros((3, 3)), 0), r"k must be a positive integer"),
        (lambda: recall_at_k(np.zeros((2, 3)), 1, targets=[0, 3]), r"targets must index the gallery"),
        (
            lambda: pose_errors(np.zeros((2, 72)), np.full((2, 72), np.inf)),
            r"gt_poses: sample 0 holds NaN or inf",
        ),
    ],
)
def test_bad_input_is_named(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
