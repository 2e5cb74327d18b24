"""Baselines scored next to the model: the mean training pose and the caption nearest neighbour.

* Mean pose: for each joint, the chordal L2 mean of the training rotations (the
  average of the rotation matrices projected back onto SO(3) by SVD). Averaging
  axis-angle vectors instead would be wrong near ±π, where the same rotation has
  two distant vectors.
* Nearest neighbour: the training pose whose caption is closest to the query text
  in the retrieval model's text space (cosine similarity of its text embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from posegpt.body.skeleton import NUM_JOINTS, POSE_DIM
from posegpt.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle
from posegpt.retrieval import TextPoseRetrieval


def project_to_rotation(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) matrices → the nearest rotations in Frobenius norm (det +1)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((*m.shape[:-2], 3))
    fix[..., 2] = d
    return (u * fix[..., None, :]) @ vt


def mean_pose(poses: np.ndarray) -> np.ndarray:
    """(N, 72) axis-angle training poses → (72,) per-joint chordal mean rotation, as axis-angle."""
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != POSE_DIM or len(p) == 0:
        raise ValueError(
            f"mean_pose needs training poses of shape (N, {POSE_DIM}) with N >= 1, got {p.shape}"
        )
    if not np.isfinite(p).all():
        raise ValueError("mean_pose: the training poses hold NaN or inf")
    rot = axis_angle_to_rotmat(torch.from_numpy(p).reshape(-1, NUM_JOINTS, 3)).numpy()
    mean = project_to_rotation(rot.mean(axis=0))
    return rotmat_to_axis_angle(torch.from_numpy(mean)).reshape(POSE_DIM).numpy().astype(np.float32)


class NearestNeighbour:
    """Answers a text query with the training pose whose caption embeds nearest to it."""

    def __init__(
        self, retrieval: TextPoseRetrieval, train_poses: np.ndarray, train_captions: Sequence[str]
    ) -> None:
        if len(train_poses) != len(train_captions) or len(train_poses) == 0:
            raise ValueError(
                f"nearest neighbour needs matching training poses and captions, got {len(train_poses)} and {len(train_captions)}"
            )
        self.retrieval = retrieval
        self.poses = np.asarray(train_poses, dtype=np.float32)
        self.captions = list(train_captions)
        self.embeddings = retrieval.embed_texts(self.captions)

    def neighbours(self, queries: Sequence[str], chunk: int = 2048) -> np.ndarray:
        """(Q,) index of the nearest training caption for each query text."""
        q = self.retrieval.embed_texts(list(queries))
        out = [np.argmax(q[i : i + chunk] @ self.embeddings.T, axis=1) for i in range(0, len(q), chunk)]
        return np.concatenate(out)

    def predict(self, queries: Sequence[str]) -> np.ndarray:
        """(Q, 72) the neighbours' poses."""
        return self.poses[self.neighbours(queries)]
