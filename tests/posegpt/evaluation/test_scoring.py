"""Per-sample scores, groups and SPIN's 14-joint protocol, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from posegpt.body import BodyModel, default_body_model
from posegpt.evaluation.scoring import H36M_TO_J14, PoseScorer, grouped_means, load_h36m_regressor


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


def test_h36m_protocol(body: BodyModel, tmp_path) -> None:
    rng = np.random.default_rng(3)
    # A regressor in SPIN's file layout: 17 rows of convex weights over a few vertices each.
    reg = np.zeros((17, body.num_vertices), np.float32)
    for j in range(17):
        idx = rng.choice(body.num_vertices, size=6, replace=False)
        reg[j, idx] = rng.dirichlet(np.ones(6))
    np.save(tmp_path / "J_regressor_h36m.npy", reg)
    loaded = load_h36m_regressor(tmp_path / "J_regressor_h36m.npy", body.num_vertices)
    pred, gt = _poses(3, 4), _poses(3, 5)
    scores = PoseScorer(body, loaded).score(["x", "y", "z"], pred, gt, h36m=True)

    def j14(poses: np.ndarray) -> np.ndarray:
        verts = body.mesh(torch.from_numpy(poses)).vertices.numpy().astype(np.float64)
        return np.einsum("jv,bvc->bjc", reg.astype(np.float64), verts)[:, list(H36M_TO_J14)]

    jp, jg = j14(pred), j14(gt)
    # SPIN centres both on the midpoint of the hips (J14 indices 2 and 3).
    cp, cg = jp - jp[:, 2:4].mean(1, keepdims=True), jg - jg[:, 2:4].mean(1, keepdims=True)
    np.testing.assert_allclose(
        scores.values["mpjpe_14"], np.linalg.norm(cp - cg, axis=-1).mean(-1) * 1000, rtol=1e-4
    )
    assert scores.values["pa_mpjpe_14"].shape == (3,)
    assert (scores.values["pa_mpjpe_14"] <= scores.values["mpjpe_14"] + 1e-6).all()

    np.save(tmp_path / "bad.npy", reg[:14])
    with pytest.raises(ValueError, match=r"bad.npy must have shape \(17, 6890\)"):
        load_h36m_regressor(tmp_path / "bad.npy", body.num_vertices)
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        load_h36m_regressor(tmp_path / "missing.npy", body.num_vertices)
    with pytest.raises(ValueError, match=r"needs metrics\.h36m_regressor"):
        PoseScorer(body).score(["x"], pred[:1], gt[:1], h36m=True)
