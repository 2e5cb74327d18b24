"""Per-sample scores, groups and SPIN's 14-joint protocol, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from posegpt.body.model import BodyModel, default_body_model
from posegpt.evaluation.scoring import (
    H36M_TO_J14,
    PoseScorer,
    grouped_means,
    load_h36m_regressor,
    spin_gt_joints14,
)


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return default_body_model()


def _poses(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 0.3, size=(n, 72)).astype(np.float32)
    p[:, 0] += np.pi
    return p


def test_scores_match_hand_computation(body: BodyModel) -> None:
    pred, gt = _poses(5, 0), _poses(5, 1)
    scores = PoseScorer(body).score([f"s{i}" for i in range(5)], pred, gt)
    jp, jg = body.joints(pred).numpy().astype(np.float64), body.joints(gt).numpy().astype(np.float64)
    mpjpe = np.linalg.norm((jp - jp[:, :1]) - (jg - jg[:, :1]), axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(scores.values["mpjpe"], mpjpe, rtol=1e-4)
    rel = Rotation.from_rotvec(pred.reshape(-1, 3).astype(np.float64)).inv() * Rotation.from_rotvec(
        gt.reshape(-1, 3).astype(np.float64)
    )
    np.testing.assert_allclose(
        scores.values["mpjre_x100"], rel.magnitude().reshape(5, 24).mean(-1) * 100, rtol=1e-4
    )
    # The same pose turned as a whole: PA-MPJPE 0, MPJPE not.
    turned = gt.copy()
    turned[:, :3] = (Rotation.from_euler("y", 40, degrees=True) * Rotation.from_rotvec(gt[:, :3])).as_rotvec()
    same = PoseScorer(body).score(["a"] * 5, turned, gt)
    assert same.values["pa_mpjpe"].max() < 0.5 and same.values["mpjpe"].min() > 20


def test_grouped_means() -> None:
    from posegpt.evaluation.scoring import SampleScores

    scores = SampleScores(["a", "b", "c", "d"], {"pa_mpjpe": np.array([10.0, 20.0, 30.0, 50.0])})
    groups = grouped_means(scores, ["3dpw", "h36m", "3dpw", "h36m"])
    assert groups == {"3dpw": {"pa_mpjpe": 20.0, "count": 2.0}, "h36m": {"pa_mpjpe": 35.0, "count": 2.0}}
    with pytest.raises(ValueError, match="3 group labels for 4 samples"):
        grouped_means(scores, ["a", "b", "c"])


def _spin_regressor(body: BodyModel, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A regressor in SPIN's file layout: 17 rows of convex weights over a few vertices each.
    reg = np.zeros((17, body.num_vertices), np.float32)
    for j in range(17):
        idx = rng.choice(body.num_vertices, size=6, replace=False)
        reg[j, idx] = rng.dirichlet(np.ones(6))
    return reg


def _spin_similarity_transform(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """SPIN's utils/pose_utils.compute_similarity_transform for one (J, 3) pair, written out again."""
    x1, x2 = s1.T, s2.T
    mu1, mu2 = x1.mean(axis=1, keepdims=True), x2.mean(axis=1, keepdims=True)
    a, b = x1 - mu1, x2 - mu2
    k = a @ b.T
    u, _, vh = np.linalg.svd(k)
    z = np.eye(3)
    z[-1, -1] = np.sign(np.linalg.det(u @ vh))
    r = vh.T @ z @ u.T
    scale = np.trace(r @ k) / np.sum(a**2)
    t = mu2 - scale * (r @ mu1)
    return (scale * r @ x1 + t).T


def _spin_errors(pred14: np.ndarray, gt14: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SPIN's eval.py: MPJPE on the centred joints as given, reconstruction error after the similarity fit (mm)."""
    mpjpe = np.sqrt(((pred14 - gt14) ** 2).sum(-1)).mean(-1) * 1000
    aligned = np.stack([_spin_similarity_transform(p, g) for p, g in zip(pred14, gt14, strict=True)])
    return mpjpe, np.sqrt(((aligned - gt14) ** 2).sum(-1)).mean(-1) * 1000


def test_h36m_protocol(body: BodyModel, tmp_path) -> None:
    reg = _spin_regressor(body)
    np.save(tmp_path / "J_regressor_h36m.npy", reg)
    loaded = load_h36m_regressor(tmp_path / "J_regressor_h36m.npy", body.num_vertices)
    pred, gt = _poses(3, 4), _poses(3, 5)
    scores = PoseScorer(body, loaded).score(["x", "y", "z"], pred, gt, h36m=True)

    def spin_j14(poses: np.ndarray) -> np.ndarray:
        # eval.py: keypoints = J_regressor @ vertices; pelvis = keypoints[:, [0]]; keypoints[:, H36M_TO_J14] - pelvis
        verts = body.mesh(torch.from_numpy(poses)).vertices.numpy().astype(np.float64)
        keypoints = np.einsum("jv,bvc->bjc", reg.astype(np.float64), verts)
        return keypoints[:, [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]] - keypoints[:, [0]]

    mpjpe, recon = _spin_errors(spin_j14(pred), spin_j14(gt))
    np.testing.assert_allclose(scores.values["mpjpe_14"], mpjpe, rtol=1e-4)
    np.testing.assert_allclose(scores.values["pa_mpjpe_14"], recon, rtol=1e-4, atol=1e-3)
    # The regressed pelvis is not the hip midpoint: centring on the hips would give other numbers.
    verts = body.mesh(torch.from_numpy(pred)).vertices.numpy().astype(np.float64)
    kp = np.einsum("jv,bvc->bjc", reg.astype(np.float64), verts)
    assert np.abs(kp[:, 0] - kp[:, list(H36M_TO_J14)][:, 2:4].mean(1)).max() > 1e-3

    np.save(tmp_path / "bad.npy", reg[:14])
    with pytest.raises(ValueError, match=r"bad.npy must have shape \(17, 6890\)"):
        load_h36m_regressor(tmp_path / "bad.npy", body.num_vertices)
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        load_h36m_regressor(tmp_path / "missing.npy", body.num_vertices)
    with pytest.raises(ValueError, match=r"needs metrics\.h36m_regressor"):
        PoseScorer(body).score(["x"], pred[:1], gt[:1], h36m=True)


def _spin_s24(body: BodyModel, reg: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """SPIN's ``S`` layout (N, 24, 4) from regressed joints: root-centred, 14 joints placed by J24_TO_J14."""
    verts = body.mesh(torch.from_numpy(poses)).vertices.numpy().astype(np.float64)
    kp = np.einsum("jv,bvc->bjc", reg.astype(np.float64), verts)
    kp = kp - kp[:, [0]]
    s24 = np.zeros((len(poses), 24, 4))
    h36m_to_j14 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]
    j24_to_j14 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18]
    s24[:, j24_to_j14, :3] = kp[:, h36m_to_j14]
    s24[:, j24_to_j14, 3] = 1.0
    s24[:, 14, 3] = 1.0  # the pelvis, at the origin
    return s24


def test_joints_only_scoring_follows_spin(body: BodyModel) -> None:
    reg = _spin_regressor(body, seed=7)
    scorer = PoseScorer(body, reg)
    gt_poses, pred = _poses(4, 8), _poses(4, 9)
    s24 = _spin_s24(body, reg, gt_poses)
    gt14 = spin_gt_joints14(s24)
    # The ground truth's own pose scores zero: prediction and S are centred on the same pelvis.
    same = scorer.score_joints(list("abcd"), gt_poses, gt14)
    assert set(same.values) == {"mpjpe_14", "pa_mpjpe_14"}
    assert same.values["mpjpe_14"].max() < 1e-3 and same.values["pa_mpjpe_14"].max() < 1e-3
    scores = scorer.score_joints(list("abcd"), pred, gt14)
    verts = body.mesh(torch.from_numpy(pred)).vertices.numpy().astype(np.float64)
    kp = np.einsum("jv,bvc->bjc", reg.astype(np.float64), verts)
    pred14 = kp[:, [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]] - kp[:, [0]]
    mpjpe, recon = _spin_errors(pred14, s24[:, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18], :3])
    np.testing.assert_allclose(scores.values["mpjpe_14"], mpjpe, rtol=1e-4)
    np.testing.assert_allclose(scores.values["pa_mpjpe_14"], recon, rtol=1e-4, atol=1e-3)


def test_spin_gt_joints_are_checked() -> None:
    good = np.zeros((2, 24, 4))
    good[..., 3] = 1.0
    assert spin_gt_joints14(good).shape == (2, 14, 3)
    with pytest.raises(
        ValueError, match=r"h36m\.npz S: expected SPIN joints of shape \(N, 24, 4\), got \(2, 17, 4\)"
    ):
        spin_gt_joints14(np.zeros((2, 17, 4)), "h36m.npz S")
    bad = good.copy()
    bad[1, 12, 0] = np.nan
    with pytest.raises(ValueError, match="row 1 holds NaN"):
        spin_gt_joints14(bad)
    unlabelled = good.copy()
    unlabelled[0, 18, 3] = 0.0
    with pytest.raises(ValueError, match="row 0 has a zero confidence"):
        spin_gt_joints14(unlabelled)
