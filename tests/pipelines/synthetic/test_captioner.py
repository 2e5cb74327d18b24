"""The posecode captioner against poses built by hand from SMPL's joint axes."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from pipelines.synthetic.captioner import describe, describe_codes, posecodes
from pipelines.synthetic.poses import mirror_pose
from posegpt.body.model import default_body_model
from posegpt.body.skeleton import JOINT_INDEX as J

HALF_PI = math.pi / 2


def pose(**joints: tuple[float, float, float]) -> np.ndarray:
    """(24, 3) axis-angle with the named joints set; the rest at identity (T-pose)."""
    p = np.zeros((24, 3))
    for name, aa in joints.items():
        p[J[name]] = aa
    return p


# In SMPL's rest frame (y up, facing +z, left = +x): a negative x rotation swings the thigh
# forward, a positive one folds the shin back; a z rotation lowers or raises an arm.
ARMS_DOWN = {"left_shoulder": (0.0, 0.0, -1.3), "right_shoulder": (0.0, 0.0, 1.3)}
STANDING = pose(**ARMS_DOWN)
SITTING = pose(
    left_hip=(-HALF_PI, 0, 0),
    right_hip=(-HALF_PI, 0, 0),
    left_knee=(HALF_PI, 0, 0),
    right_knee=(HALF_PI, 0, 0),
    **ARMS_DOWN,
)
KNEELING = pose(
    left_knee=(HALF_PI, 0, 0),
    right_knee=(HALF_PI, 0, 0),
    left_ankle=(HALF_PI, 0, 0),
    right_ankle=(HALF_PI, 0, 0),
    **ARMS_DOWN,
)
ARMS_UP = pose(left_shoulder=(0, 0, HALF_PI), right_shoulder=(0, 0, -HALF_PI))
LYING_BACK = pose(pelvis=(-HALF_PI, 0, 0), **ARMS_DOWN)
LYING_FRONT = pose(pelvis=(HALF_PI, 0, 0), **ARMS_DOWN)


def joints(*poses: np.ndarray) -> np.ndarray:
    body = default_body_model()
    with torch.no_grad():
        return body.joints(torch.as_tensor(np.stack(poses).reshape(-1, 72), dtype=torch.float32)).numpy()


def knee_angle(jt: np.ndarray, side: str) -> float:
    u = jt[J[f"{side}_hip"]] - jt[J[f"{side}_knee"]]
    v = jt[J[f"{side}_ankle"]] - jt[J[f"{side}_knee"]]
    return math.degrees(math.acos(float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))))


def test_convention_thigh_forward_for_negative_x() -> None:
    (jt,) = joints(SITTING)
    thigh = jt[J["left_knee"]] - jt[J["left_hip"]]
    shin = jt[J["left_ankle"]] - jt[J["left_knee"]]
    assert thigh[2] > 0.3 and abs(thigh[1]) < 0.1  # forward, horizontal
    assert shin[1] < -0.3 and abs(shin[2]) < 0.1  # straight down


def test_standing_and_sitting() -> None:
    stand, sit = joints(STANDING, SITTING)
    s, c = posecodes(stand), posecodes(sit)
    assert s.posture == "standing" and s.knee == {"left": "straight", "right": "straight"}
    assert c.posture == "sitting" and c.knee == {"left": "bent", "right": "bent"}
    for side in ("left", "right"):
        assert c.knee_angle[side] == pytest.approx(knee_angle(sit, side), abs=1e-3)
        assert c.knee_angle[side] == pytest.approx(90.0, abs=8.0)
    for seed in range(4):
        for style in ("auto", "human"):
            text = describe(sit, np.random.default_rng(seed), style).lower()
            assert "sit" in text or "seated" in text
            # Every clause about the knees says they bend (captions list knees once, never "straight").
            knee_clauses = [c for c in re.split(r"[.;:,]| and | while ", text) if "knee" in c]
            assert knee_clauses and all(
                ("bent" in c or "flexed" in c) and "straight" not in c for c in knee_clauses
            )


def test_kneeling_lying_and_arms_up() -> None:
    kneel, up, back, front = joints(KNEELING, ARMS_UP, LYING_BACK, LYING_FRONT)
    k = posecodes(kneel)
    assert k.posture == "kneeling" and k.knee_on_ground == {"left": True, "right": True}
    for style in ("auto", "human"):
        assert "both knees" in describe(kneel, np.random.default_rng(1), style)
    u = posecodes(up)
    assert u.hand_height == {"left": "above the head", "right": "above the head"}
    assert posecodes(back).posture == "lying" and posecodes(back).lying == "on the back"
    assert posecodes(front).lying == "face down"
    assert "on the back" in describe(back, np.random.default_rng(3))


def test_codes_ignore_heading_and_mirror_swaps_sides() -> None:
    one_knee = pose(left_hip=(-1.2, 0, 0), left_knee=(1.6, 0, 0), **ARMS_DOWN)
    turned = one_knee.copy()
    turned[0] = (0.0, 1.1, 0.0)  # the same body turned about the vertical
    base, rot, mir = joints(one_knee, turned, mirror_pose(one_knee))
    a, b, m = posecodes(base), posecodes(rot), posecodes(mir)
    assert (
        a.knee == b.knee and a.elbow == b.elbow and a.posture == b.posture and a.hand_height == b.hand_height
    )
    assert a.knee["left"] != "straight" and a.knee["right"] == "straight"
    assert m.knee == {"left": a.knee["right"], "right": a.knee["left"]}


def test_captions_vary_but_are_reproducible() -> None:
    (jt,) = joints(SITTING)
    codes = posecodes(jt)
    first = [describe_codes(codes, np.random.default_rng([5, k])) for k in range(6)]
    again = [describe_codes(codes, np.random.default_rng([5, k])) for k in range(6)]
    assert first == again
    assert len(set(first)) >= 4


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="joints"):
        posecodes(np.zeros((22, 3)))
    with pytest.raises(ValueError, match="joints"):
        posecodes(np.full((24, 3), np.nan))
    with pytest.raises(ValueError, match="style"):
        describe(joints(STANDING)[0], np.random.default_rng(0), "poetic")
