"""Baselines: the mean training pose against hand computations; the caption nearest neighbour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posegpt.evaluation.baselines import NearestNeighbour, mean_pose, project_to_rotation
from posegpt.retrieval import TextPoseRetrieval
from tests.fixtures.evaluation import TEXT_CACHE


def test_mean_pose_by_hand() -> None:
    # Every joint rotated about z by 0.2 rad in one pose and 0.6 rad in the other: the mean is 0.4 rad about z.
    poses = np.zeros((2, 72), np.float32)
    poses[0, 2::3] = 0.2
    poses[1, 2::3] = 0.6
    expected = np.zeros(72)
    expected[2::3] = 0.4
    np.testing.assert_allclose(mean_pose(poses), expected, atol=1e-6)
    # Near π the axis-angle vectors of nearly equal rotations point opposite ways; their naive mean is ~0.
    flip = np.zeros((2, 72), np.float32)
    flip[0, 0] = np.pi - 0.05
    flip[1, 0] = -(np.pi - 0.05)
    assert abs(abs(mean_pose(flip)[0]) - np.pi) < 1e-3
    assert abs(flip.mean(axis=0)[0]) < 1e-6


def test_mean_pose_matches_scipy_chordal_mean() -> None:
    rng = np.random.default_rng(0)
    poses = rng.normal(0.0, 0.7, size=(50, 72))
    ours = mean_pose(poses).reshape(24, 3)
    for j in range(24):
        ref = Rotation.from_rotvec(poses[:, 3 * j : 3 * j + 3]).mean()
        assert (Rotation.from_rotvec(ours[j]).inv() * ref).magnitude() < 1e-5
    with pytest.raises(ValueError, match=r"\(N, 72\)"):
        mean_pose(np.zeros((0, 72)))
    bad = poses.copy()
    bad[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        mean_pose(bad)


def test_project_to_rotation() -> None:
    r = Rotation.random(4, random_state=1).as_matrix()
    np.testing.assert_allclose(project_to_rotation(r * 0.7), r, atol=1e-12)
    reflected = r.copy()
    reflected[:, :, 0] *= -1  # det -1: the projection must still be a rotation
    assert np.allclose(np.linalg.det(project_to_rotation(reflected)), 1.0)


def test_nearest_neighbour(trained_retrieval, toy_retrieval_data) -> None:
    model = TextPoseRetrieval.load(trained_retrieval, cache_dir=TEXT_CACHE)
    poses, captions = toy_retrieval_data["train"]
    nn = NearestNeighbour(model, poses[:100], captions[:100])
    # A training caption's nearest caption is itself (or an identical one): its own pose comes back.
    idx = nn.neighbours(captions[:20])
    assert all(captions[i] == captions[j] for i, j in zip(range(20), idx, strict=True))
    np.testing.assert_array_equal(nn.predict(captions[5:6]), poses[idx[5]][None])
    with pytest.raises(ValueError, match="matching training poses and captions"):
        NearestNeighbour(model, poses[:3], captions[:2])
