"""The activity library: bones point where asked, mirroring, and the frames of DESIGN.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pipelines.synthetic.captioner import posecodes
from pipelines.synthetic.poses import (
    ACTIVITIES,
    ACTIVITY_BY_NAME,
    build_pose,
    mirror_pose,
    root_matrix,
    sample_activity_pose,
    to_amass,
    to_camera,
)
from posegpt.body.model import default_body_model
from posegpt.body.skeleton import JOINT_INDEX as J
from posegpt.body.skeleton import JOINT_NAMES
from posegpt.geometry import zup_root_to_camera_frame

CHILD = {
    J["left_hip"]: J["left_knee"],
    J["right_hip"]: J["right_knee"],
    J["left_knee"]: J["left_ankle"],
    J["right_knee"]: J["right_ankle"],
    J["left_shoulder"]: J["left_elbow"],
    J["right_shoulder"]: J["right_elbow"],
    J["left_elbow"]: J["left_wrist"],
    J["right_elbow"]: J["right_wrist"],
}

EXPECTED_POSTURES = {
    "standing": {"standing"},
    "t_pose": {"standing"},
    "arms_raised": {"standing"},
    "waving": {"standing"},
    "reaching": {"standing"},
    "walking": {"standing", "standing on one leg"},
    "running": {"standing on one leg", "standing"},
    "sitting": {"sitting"},
    "sitting_floor": {"sitting on the ground"},
    "kneeling": {"kneeling"},
    "proposing": {"kneeling"},
    "squatting": {"squatting"},
    "lying": {"lying"},
    "push_up": {"push-up"},
    "bending_over": {"bent over"},
    "lunge": {"lunging"},
    "hands_on_hips": {"standing"},
    "arms_crossed": {"standing"},
    "kicking": {"standing on one leg"},
    "balancing": {"standing on one leg"},
}


def joints_of(poses: np.ndarray) -> np.ndarray:
    body = default_body_model()
    with torch.no_grad():
        return body.joints(torch.as_tensor(np.asarray(poses).reshape(-1, 72), dtype=torch.float32)).numpy()


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(float(np.clip(cos, -1, 1))))


def test_every_activity_is_listed_with_an_expected_posture() -> None:
    assert set(EXPECTED_POSTURES) == {a.name for a in ACTIVITIES}
    assert all(len(a.implicit) >= 3 for a in ACTIVITIES)


@pytest.mark.parametrize("name", ["sitting", "proposing", "waving", "bending_over", "lying"])
def test_limb_bones_point_where_the_activity_aims_them(name: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        spec = ACTIVITY_BY_NAME[name].sample(rng)
        pose = build_pose(spec)
        joints = joints_of(pose)[0]
        for joint, target in spec.aims.items():
            if joint not in CHILD:
                continue
            bone = spec.root.T @ (joints[CHILD[joint]] - joints[joint])
            # The procedural body's rest bones are a few degrees off the ideal axes.
            assert angle_deg(bone, target) < 10.0, f"{name}: {JOINT_NAMES[joint]} off target"


def test_mirroring_flips_x_and_swaps_sides() -> None:
    rng = np.random.default_rng(3)
    pose = sample_activity_pose(ACTIVITY_BY_NAME["waving"], rng, mirror=False)
    joints, mirrored = joints_of(np.stack([pose, mirror_pose(pose)]))
    swap = [J[n.replace("left_", "#").replace("right_", "left_").replace("#", "right_")] for n in JOINT_NAMES]
    expected = mirrored[swap] * np.array([-1.0, 1.0, 1.0])
    # Compare relative to the pelvis: the procedural body is symmetric about x = 0.
    assert np.allclose(expected - expected[0], joints - joints[0], atol=1e-4)


@pytest.mark.parametrize("name", [a.name for a in ACTIVITIES])
def test_amass_root_converts_back_to_the_camera_convention_up_to_yaw(name: str) -> None:
    rng = np.random.default_rng(11)
    pose = sample_activity_pose(ACTIVITY_BY_NAME[name], rng, mirror=bool(rng.random() < 0.5))
    camera = Rotation.from_rotvec([math.pi, 0, 0]).as_matrix() @ root_matrix(pose)
    converted = []
    for yaw in (-150.0, 20.0, 95.0):
        amass_root = torch.as_tensor(to_amass(pose, yaw)[0], dtype=torch.float64)
        converted.append(Rotation.from_rotvec(zup_root_to_camera_frame(amass_root).numpy()).as_matrix())
    for r in converted:
        # r = Ry(φ) · Rx(180°) · A: the difference is a rotation about the camera's vertical axis.
        diff = r @ camera.T
        assert diff[1, 1] == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(diff[1, [0, 2]], 0.0, atol=1e-6) and np.allclose(diff[[0, 2], 1], 0.0, atol=1e-6)
    # Zeroing the yaw makes the result independent of the heading AMASS recorded.
    assert np.allclose(converted[0], converted[1], atol=1e-6) and np.allclose(
        converted[0], converted[2], atol=1e-6
    )


def test_camera_frame_pose_is_upright_in_the_image() -> None:
    rng = np.random.default_rng(5)
    pose = sample_activity_pose(ACTIVITY_BY_NAME["standing"], rng, mirror=False)
    for yaw in (0.0, 90.0, 180.0):
        joints = joints_of(to_camera(pose, yaw))[0]
        assert joints[J["head"], 1] < joints[J["pelvis"], 1] - 0.4  # y down: the head is above
        assert joints[J["left_ankle"], 1] > joints[J["pelvis"], 1] + 0.6
    towards, away = joints_of(np.stack([to_camera(pose, 0.0), to_camera(pose, 180.0)]))
    # Facing the camera, a person's left side is on the image's right (x right); turned away, on its left.
    assert towards[J["left_hip"], 0] > towards[J["right_hip"], 0]
    assert away[J["left_hip"], 0] < away[J["right_hip"], 0]


def test_activities_measure_as_their_posture() -> None:
    rng = np.random.default_rng(2024)
    poses, names = [], []
    for act in ACTIVITIES:
        for k in range(16):
            poses.append(sample_activity_pose(act, rng, mirror=bool(k % 2)))
            names.append(act.name)
    joints = joints_of(np.stack(poses))
    for act in ACTIVITIES:
        codes = [posecodes(jt) for jt, n in zip(joints, names, strict=True) if n == act.name]
        hits = sum(c.posture in EXPECTED_POSTURES[act.name] for c in codes)
        assert hits >= 15, f"{act.name}: postures {[c.posture for c in codes]}"
        on_hips = sum(c.hands_on_hips for c in codes)
        assert on_hips >= 14 if act.name == "hands_on_hips" else on_hips == 0, (
            f"{act.name}: hands on hips {on_hips}"
        )
