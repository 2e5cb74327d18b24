"""AMASS: alias resolution, SMPL-H → SMPL, and the z-up → camera frame convention."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipelines.sources.amass import AmassFiles, alias_candidates, smplh_to_smpl
from pipelines.sources.inputs import ReadContext
from tests.pipelines.sources.raw_files import amass_sequence


def test_alias_candidates_go_both_ways() -> None:
    assert alias_candidates("BioMotionLab_NTroje/rub001/a_poses.npz") == [
        "BioMotionLab_NTroje/rub001/a_poses.npz",
        "BMLrub/rub001/a_poses.npz",
    ]
    assert alias_candidates("HDM05/bk/x.npz")[1] == "MPI_HDM05/bk/x.npz"
    assert alias_candidates("CMU/01/01_01_poses.npz") == ["CMU/01/01_01_poses.npz"]


@pytest.mark.parametrize("yaw", [0.0, 37.0, -120.0, 179.0])
def test_upright_root_becomes_rx180_whatever_the_heading(yaw: float) -> None:
    root = Rotation.from_euler("z", yaw, degrees=True) * Rotation.from_euler("x", 90, degrees=True)
    poses = np.zeros((1, 156))
    poses[0, :3] = root.as_rotvec()
    poses[0, 3:] = np.linspace(-0.5, 0.5, 153)
    out = smplh_to_smpl(poses)
    assert out.shape == (1, 72) and out.dtype == np.float32
    got = Rotation.from_rotvec(out[0, :3].astype(np.float64))
    want = Rotation.from_euler("x", 180, degrees=True)
    assert (got.inv() * want).magnitude() < 1e-5
    # Body joints 1..21 are SMPL-H's; SMPL's hands (22, 23) are identity, not SMPL-H fingers.
    np.testing.assert_allclose(out[0, 3:66], poses[0, 3:66], atol=1e-6)
    np.testing.assert_array_equal(out[0, 66:], 0.0)


def test_tilted_root_keeps_its_pitch() -> None:
    # Leaning forward by 30° about the body's x axis in the z-up world, heading 50°.
    root = Rotation.from_euler("z", 50, degrees=True) * Rotation.from_euler("x", 90 + 30, degrees=True)
    poses = np.zeros((1, 66))
    poses[0, :3] = root.as_rotvec()
    out = smplh_to_smpl(poses)
    want = Rotation.from_euler("x", 90, degrees=True) * Rotation.from_euler("x", 90 + 30, degrees=True)
    assert (Rotation.from_rotvec(out[0, :3].astype(np.float64)).inv() * want).magnitude() < 1e-5


def test_files_resolve_under_either_name(tmp_path) -> None:
    poses = amass_sequence(tmp_path / "amass" / "BMLrub" / "s1" / "walk_poses.npz", 5, 20.0, seed=1)
    files = AmassFiles(ReadContext(str(tmp_path)), "amass")
    uri, frame = files.frame("BioMotionLab_NTroje/s1/walk_poses.npz", 3)
    assert uri.endswith("BMLrub/s1/walk_poses.npz")
    np.testing.assert_allclose(frame[3:66], poses[3, 3:66], atol=1e-6)
    uri, reason = files.frame("MPI_HDM05/s1/missing_poses.npz", 0)
    assert isinstance(reason, str) and "MPI_HDM05/s1/missing_poses.npz" in reason and "HDM05/s1" in reason
    _, reason = files.frame("BMLrub/s1/walk_poses.npz", 9)
    assert "5 frames, frame 9" in reason
