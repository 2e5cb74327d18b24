"""The synthetic stand-ins for SPIN's H36M files read back through the joints-only path with zero error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posegpt.body.model import default_body_model, load_body_arrays
from posegpt.evaluation.joints_source import read_spin_joints
from posegpt.evaluation.scoring import PoseScorer
from posegpt.evaluation.synthetic_joints import body_h36m_regressor, spin_joints_npz


def test_protocol_file_round_trip(tmp_path: Path) -> None:
    body = default_body_model()
    reg = body_h36m_regressor(body)
    smpl_reg = load_body_arrays(body.source)["J_regressor"]
    assert reg.shape == (17, body.num_vertices)
    np.testing.assert_allclose(reg[0], smpl_reg[0])  # H36M joint 0, the pelvis, is SMPL's pelvis
    rng = np.random.default_rng(0)
    poses = rng.normal(0, 0.3, size=(4, 72))
    poses[:, 0] += np.pi
    np.savez(
        tmp_path / "test.npz",
        imgname=np.array([f"img{i}.jpg" for i in range(4)]),
        center=np.full((4, 2), 50.0),
        scale=np.full(4, 0.5),
        pose=poses,
        has_smpl=np.array([1.0, 0.0, 1.0, 1.0]),
    )
    assert spin_joints_npz(tmp_path / "test.npz", tmp_path / "h36m_valid_protocol2.npz", body, reg) == 3
    rows = read_spin_joints(str(tmp_path / "h36m_valid_protocol2.npz"), "h36m")
    assert rows.imgnames == ["img0.jpg", "img2.jpg", "img3.jpg"]
    kept = poses[[0, 2, 3]].astype(np.float32)
    scores = PoseScorer(body, reg).score_joints(rows.sample_ids, kept, rows.joints14)
    assert scores.values["mpjpe_14"].max() < 0.01 and scores.values["pa_mpjpe_14"].max() < 0.01
    other = PoseScorer(body, reg).score_joints(rows.sample_ids, kept[::-1].copy(), rows.joints14)
    assert other.values["mpjpe_14"][0] > 10
