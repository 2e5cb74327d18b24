"""A library of recognisable activities as SMPL poses, with random variation.

Poses are built in SMPL's *canonical* frame: y up, the body facing +z, its left
side towards +x (the rest pose's frame). An activity samples a few intuitive
parameters (how far the thighs are raised, how much the knees bend, where the
arms point) and turns them into joint rotations by aiming each bone at a target
direction: the bone's rotation is the smallest swing that takes its current
direction (inherited from its parent) to the target, so the pose has no
gratuitous twist. Directions are given in the body's own frame (relative to the
root orientation ``A``), which keeps limbs meaningful when the whole body is
tilted (lying, bending over).

``A`` (the root) says how the body stands in the canonical frame: identity for
upright. The other frames of the project follow from it:

* camera frame (image data): ``root = Ry(θ)·Rx(180°)·A`` for a camera turned by θ
  about the vertical;
* AMASS z-up world: ``root = Rz(yaw)·Rx(+90°)·A``; DESIGN.md's conversion (zero
  the yaw, then ``Rx(+90°)``) maps it back to ``Ry(φ)·Rx(180°)·A``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from posegpt.body.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, PARENTS

J = JOINT_INDEX

# Idealised rest direction of the bone each joint rotates (canonical frame).
_FOOT_REST = np.array([0.0, -0.35, 1.0]) / math.hypot(0.35, 1.0)
BONE_REST: dict[int, np.ndarray] = {
    J["left_hip"]: np.array([0.0, -1.0, 0.0]),
    J["right_hip"]: np.array([0.0, -1.0, 0.0]),
    J["left_knee"]: np.array([0.0, -1.0, 0.0]),
    J["right_knee"]: np.array([0.0, -1.0, 0.0]),
    J["left_ankle"]: _FOOT_REST,
    J["right_ankle"]: _FOOT_REST,
    J["left_shoulder"]: np.array([1.0, 0.0, 0.0]),
    J["right_shoulder"]: np.array([-1.0, 0.0, 0.0]),
    J["left_elbow"]: np.array([1.0, 0.0, 0.0]),
    J["right_elbow"]: np.array([-1.0, 0.0, 0.0]),
    J["left_wrist"]: np.array([1.0, 0.0, 0.0]),
    J["right_wrist"]: np.array([-1.0, 0.0, 0.0]),
}


# Left/right joint pairs (for mirroring).
def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


_MIRROR_PERM = np.array([J[_mirror_name(name)] for name in JOINT_NAMES])


# Closed forms in numpy: scipy's Rotation costs tens of microseconds per call, and the
# world builds hundreds of thousands of small rotations.


def rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle → (..., 3, 3) (Rodrigues; first order below 1e-8 rad)."""
    rv = np.asarray(rv, dtype=np.float64)
    theta = np.linalg.norm(rv, axis=-1)[..., None, None]
    safe = np.where(theta < 1e-8, 1.0, theta)
    x, y, z = rv[..., 0], rv[..., 1], rv[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    a = np.where(theta < 1e-8, 1.0, np.sin(safe) / safe)
    b = np.where(theta < 1e-8, 0.5, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * k + b * (k @ k)


def matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) → (..., 3) axis-angle with angle in [0, π] (one batched scipy call)."""
    m = np.asarray(m, dtype=np.float64)
    return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_rotvec().reshape(*m.shape[:-2], 3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _axis_angle(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    """3×3 rotation about a unit axis (Rodrigues, scalar arithmetic: this runs per bone)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    t = 1.0 - c
    return np.array(
        [
            [c + t * x * x, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, c + t * y * y, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, c + t * z * z],
        ]
    )


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` to unit vector ``b`` (3×3)."""
    ax, ay, az = (float(v) for v in _unit(np.asarray(a, dtype=np.float64)))
    bx, by, bz = (float(v) for v in _unit(np.asarray(b, dtype=np.float64)))
    cx, cy, cz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    s = math.sqrt(cx * cx + cy * cy + cz * cz)
    c = max(-1.0, min(1.0, ax * bx + ay * by + az * bz))
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        # Opposite vectors: turn half a circle about any axis perpendicular to a.
        px, py, pz = (ay, -ax, 0.0) if abs(az) < 0.9 else (0.0, az, -ay)
        n = math.sqrt(px * px + py * py + pz * pz)
        return _axis_angle((px / n, py / n, pz / n), math.pi)
    return _axis_angle((cx / s, cy / s, cz / s), math.atan2(s, c))


def leg_dirs(flex: float, knee: float, abduct: float = 0.0, side: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Thigh and shin directions (body frame) from hip flexion, knee bend and abduction (degrees).

    ``flex`` 0 = thigh straight down, 90 = thigh horizontal forward, negative = behind;
    ``knee`` 0 = straight, 90 = shin at a right angle behind the thigh; ``side`` +1 left, -1 right.
    """
    f, a = math.radians(flex), math.radians(abduct)
    thigh = np.array([side * math.sin(a), -math.cos(f) * math.cos(a), math.sin(f) * math.cos(a)])
    shin = rot_x(knee) @ thigh
    return _unit(thigh), _unit(shin)


def arm_dir(elev: float, azim: float, side: int = 1) -> np.ndarray:
    """Upper-arm direction (body frame): ``elev`` -90 down … 90 up, ``azim`` 0 sideways, 90 forward, <0 behind."""
    e, a = math.radians(elev), math.radians(azim)
    return np.array([side * math.cos(e) * math.cos(a), math.sin(e), math.cos(e) * math.sin(a)])


def bend_towards(upper: np.ndarray, towards: np.ndarray, angle: float) -> np.ndarray:
    """Forearm direction: ``upper`` turned by ``angle`` degrees in the plane towards ``towards``."""
    u = _unit(upper)
    perp = np.asarray(towards, dtype=float) - (np.asarray(towards) @ u) * u
    if np.linalg.norm(perp) < 1e-6:
        perp = np.cross(u, [1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.cross(u, [0.0, 0.0, 1.0])
    perp = _unit(perp)
    t = math.radians(angle)
    return _unit(math.cos(t) * u + math.sin(t) * perp)


@dataclass
class PoseSpec:
    """What an activity asks for; ``build_pose`` turns it into 24 axis-angle rotations."""

    root: np.ndarray = field(default_factory=lambda: np.eye(3))
    """Body orientation ``A`` in the canonical frame (identity = upright, facing +z)."""
    spine: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Whole-spine forward bend, side bend (towards the left) and twist, degrees (split over 3 joints)."""
    head: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Neck+head forward bend, side bend and turn, degrees."""
    aims: dict[int, np.ndarray] = field(default_factory=dict)
    """Joint index → target direction (body frame) of the bone it rotates."""


def build_pose(spec: PoseSpec) -> np.ndarray:
    """(24, 3) axis-angle, root = ``spec.root``, in SMPL's joint order."""
    local = np.repeat(np.eye(3)[None], NUM_JOINTS, axis=0)
    local[0] = spec.root
    fwd, side, twist = spec.spine
    for j in (J["spine1"], J["spine2"], J["spine3"]):
        # Forward bend tilts "up" towards +z (x rotation); side bend towards +x (negative z rotation).
        local[j] = rot_y(twist / 3) @ rot_z(-side / 3) @ rot_x(fwd / 3)
    hf, hs, ht = spec.head
    local[J["neck"]] = rot_z(-hs / 2) @ rot_x(hf / 2)
    local[J["head"]] = rot_y(ht) @ rot_z(-hs / 2) @ rot_x(hf / 2)
    glob = np.zeros_like(local)
    for j in range(NUM_JOINTS):
        parent = PARENTS[j]
        parent_g = np.eye(3) if parent < 0 else glob[parent]
        if j in spec.aims:
            # Inherited bone direction in the body frame; aims are relative to the root.
            body_parent = spec.root.T @ parent_g
            current = body_parent @ BONE_REST[j]
            r = swing(current, spec.aims[j])
            local[j] = body_parent.T @ r @ body_parent
        glob[j] = parent_g @ local[j]
    return matrix_to_rotvec(local)


def mirror_pose(pose: np.ndarray) -> np.ndarray:
    """Left-right mirror (about the x = 0 plane): swap sides, negate the y and z of each axis-angle."""
    p = np.asarray(pose).reshape(NUM_JOINTS, 3)[_MIRROR_PERM].copy()
    p[:, 1:] *= -1.0
    return p


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _legs(spec: PoseSpec, left: tuple[np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray]) -> None:
    spec.aims[J["left_hip"]], spec.aims[J["left_knee"]] = left
    spec.aims[J["right_hip"]], spec.aims[J["right_knee"]] = right


def _arms(spec: PoseSpec, left: tuple[np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray]) -> None:
    spec.aims[J["left_shoulder"]], spec.aims[J["left_elbow"]] = left
    spec.aims[J["right_shoulder"]], spec.aims[J["right_elbow"]] = right


def _arm(
    rng: np.random.Generator, side: int, elev: tuple[float, float], azim: tuple[float, float],
    bend: tuple[float, float] = (0.0, 15.0), towards: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    upper = arm_dir(_u(rng, *elev), _u(rng, *azim), side)
    return upper, bend_towards(upper, np.array(towards), _u(rng, *bend))


def _straight_legs(
    rng: np.random.Generator, spec: PoseSpec, spread: tuple[float, float] = (2.0, 10.0)
) -> None:
    _legs(
        spec,
        leg_dirs(_u(rng, -5, 8), _u(rng, 0, 10), _u(rng, *spread), 1),
        leg_dirs(_u(rng, -5, 8), _u(rng, 0, 10), _u(rng, *spread), -1),
    )


def _kneel_foot(rng: np.random.Generator, spec: PoseSpec, side: str) -> None:
    """The foot of a kneeling leg lies flat behind the knee (instep on the floor)."""
    spec.aims[J[f"{side}_ankle"]] = _unit(np.array([0.0, _u(rng, -0.25, -0.05), -1.0]))


def _arms_down(rng: np.random.Generator, spec: PoseSpec) -> None:
    _arms(spec, _arm(rng, 1, (-85, -70), (-10, 20), (0, 20)), _arm(rng, -1, (-85, -70), (-10, 20), (0, 20)))


# Each activity: rng -> PoseSpec, always built on the "left" variant; mirroring gives the other.


def standing(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(
        spine=(_u(rng, -4, 6), _u(rng, -4, 4), _u(rng, -8, 8)), head=(_u(rng, -10, 15), 0, _u(rng, -20, 20))
    )
    _straight_legs(rng, spec)
    _arms_down(rng, spec)
    return spec


def t_pose(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -3, 3), 0, 0))
    _straight_legs(rng, spec, (3, 12))
    _arms(spec, _arm(rng, 1, (-8, 8), (-8, 8), (0, 8)), _arm(rng, -1, (-8, 8), (-8, 8), (0, 8)))
    return spec


def arms_raised(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -12, 0), 0, 0), head=(_u(rng, -30, -5), 0, 0))
    _straight_legs(rng, spec, (3, 15))
    _arms(
        spec,
        _arm(rng, 1, (55, 85), (-5, 30), (0, 25), (-1, 0, 0)),
        _arm(rng, -1, (55, 85), (-5, 30), (0, 25), (1, 0, 0)),
    )
    return spec


def waving(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -3, 5), _u(rng, -5, 0), 0), head=(0, 0, _u(rng, -10, 25)))
    _straight_legs(rng, spec)
    _arms(spec, _arm(rng, 1, (-10, 25), (0, 30), (75, 115), (0, 1, 0)), _arm(rng, -1, (-85, -70), (-10, 15)))
    return spec


def reaching(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, 5, 20), _u(rng, -8, 0), _u(rng, -15, 0)), head=(_u(rng, -25, -5), 0, 0))
    _legs(
        spec, leg_dirs(_u(rng, -5, 5), _u(rng, 0, 8), 5, 1), leg_dirs(_u(rng, -15, -5), _u(rng, 0, 10), 5, -1)
    )
    _arms(spec, _arm(rng, 1, (25, 60), (65, 90), (0, 10)), _arm(rng, -1, (-80, -60), (-5, 20), (5, 30)))
    return spec


def walking(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, 0, 8), 0, _u(rng, -6, 6)), head=(_u(rng, 0, 10), 0, 0))
    _legs(
        spec,
        leg_dirs(_u(rng, 15, 30), _u(rng, 0, 15), 3, 1),
        leg_dirs(_u(rng, -25, -10), _u(rng, 15, 40), 3, -1),
    )
    _arms(spec, _arm(rng, 1, (-80, -65), (-45, -20), (5, 25)), _arm(rng, -1, (-80, -65), (20, 45), (15, 40)))
    return spec


def running(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, 10, 22), 0, _u(rng, -10, 10)), head=(_u(rng, -10, 0), 0, 0))
    _legs(
        spec,
        leg_dirs(_u(rng, 45, 70), _u(rng, 60, 95), 3, 1),
        leg_dirs(_u(rng, -30, -15), _u(rng, 70, 110), 3, -1),
    )
    _arms(
        spec,
        _arm(rng, 1, (-70, -45), (-60, -30), (75, 100), (0, 1, 0)),
        _arm(rng, -1, (-60, -35), (45, 75), (75, 100), (0, 1, 0)),
    )
    return spec


def sitting(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -5, 15), 0, _u(rng, -8, 8)), head=(_u(rng, 0, 15), 0, _u(rng, -15, 15)))
    k = _u(rng, 84, 100)
    _legs(
        spec,
        leg_dirs(_u(rng, 80, 95), k + _u(rng, -8, 8), _u(rng, 5, 15), 1),
        leg_dirs(_u(rng, 80, 95), k + _u(rng, -8, 8), _u(rng, 5, 15), -1),
    )
    _arms(
        spec,
        _arm(rng, 1, (-75, -55), (55, 85), (40, 70), (0, 0, 1)),
        _arm(rng, -1, (-75, -55), (55, 85), (40, 70), (0, 0, 1)),
    )
    return spec


def sitting_floor(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -10, 5), 0, 0), head=(_u(rng, 0, 15), 0, 0))
    _legs(
        spec,
        leg_dirs(_u(rng, 92, 100), _u(rng, 0, 12), _u(rng, 5, 15), 1),
        leg_dirs(_u(rng, 92, 100), _u(rng, 0, 12), _u(rng, 5, 15), -1),
    )
    _arms(spec, _arm(rng, 1, (-70, -55), (-70, -40), (0, 10)), _arm(rng, -1, (-70, -55), (-70, -40), (0, 10)))
    return spec


def kneeling(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -5, 10), 0, 0), head=(_u(rng, 0, 25), 0, 0))
    _legs(
        spec,
        leg_dirs(_u(rng, -5, 10), _u(rng, 85, 100), _u(rng, 3, 12), 1),
        leg_dirs(_u(rng, -5, 10), _u(rng, 85, 100), _u(rng, 3, 12), -1),
    )
    _kneel_foot(rng, spec, "left")
    _kneel_foot(rng, spec, "right")
    if rng.random() < 0.5:
        _arms_down(rng, spec)
    else:  # hands together in front of the chest, as in prayer
        _arms(
            spec,
            _arm(rng, 1, (-70, -55), (30, 50), (110, 135), (-1, 0.6, 0.3)),
            _arm(rng, -1, (-70, -55), (30, 50), (110, 135), (1, 0.6, 0.3)),
        )
    return spec


def proposing(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, 0, 10), 0, 0), head=(_u(rng, -15, 0), 0, 0))
    _legs(
        spec,
        # Front thigh a little above horizontal so both the front foot and the back knee reach the floor.
        leg_dirs(_u(rng, 96, 108), _u(rng, 90, 108), _u(rng, 0, 10), 1),
        leg_dirs(_u(rng, -5, 5), _u(rng, 85, 100), _u(rng, 0, 8), -1),
    )
    _kneel_foot(rng, spec, "right")
    _arms(spec, _arm(rng, 1, (-70, -50), (20, 45), (20, 45)), _arm(rng, -1, (-25, 0), (70, 90), (15, 40)))
    return spec


def squatting(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, 20, 35), 0, 0), head=(_u(rng, -25, -10), 0, 0))
    f, k = _u(rng, 75, 100), _u(rng, 120, 145)
    _legs(
        spec,
        leg_dirs(f + _u(rng, -5, 5), k + _u(rng, -5, 5), _u(rng, 15, 25), 1),
        leg_dirs(f + _u(rng, -5, 5), k + _u(rng, -5, 5), _u(rng, 15, 25), -1),
    )
    _arms(spec, _arm(rng, 1, (-15, 10), (75, 90), (0, 20)), _arm(rng, -1, (-15, 10), (75, 90), (0, 20)))
    return spec


def lying(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(root=rot_x(-90 + _u(rng, -5, 5)) @ rot_y(_u(rng, -10, 10)), head=(_u(rng, -10, 20), 0, 0))
    _straight_legs(rng, spec, (3, 15))
    if rng.random() < 0.5:  # one knee up
        spec.aims[J["left_hip"]], spec.aims[J["left_knee"]] = leg_dirs(
            _u(rng, 40, 60), _u(rng, 80, 110), 5, 1
        )
    if rng.random() < 0.5:
        _arms_down(rng, spec)
    else:  # hands behind the head
        _arms(
            spec,
            _arm(rng, 1, (40, 60), (-20, 0), (120, 145), (-1, 0, 0)),
            _arm(rng, -1, (40, 60), (-20, 0), (120, 145), (1, 0, 0)),
        )
    return spec


def push_up(rng: np.random.Generator) -> PoseSpec:
    # Face down, body straight; the arms point at the floor (body frame: forward, since front faces down).
    # About 20° above horizontal: straight arms under the shoulders then reach the floor.
    spec = PoseSpec(root=rot_x(90 - _u(rng, 16, 22)), head=(_u(rng, -20, 0), 0, 0))
    _legs(spec, leg_dirs(_u(rng, -3, 3), 0, _u(rng, 3, 8), 1), leg_dirs(_u(rng, -3, 3), 0, _u(rng, 3, 8), -1))
    down = spec.root.T @ np.array([0.0, -1.0, 0.0])
    for side, shoulder, elbow in ((1, "left_shoulder", "left_elbow"), (-1, "right_shoulder", "right_elbow")):
        d = _unit(down + np.array([side * _u(rng, 0.05, 0.25), 0.0, 0.0]))
        spec.aims[J[shoulder]] = d
        spec.aims[J[elbow]] = bend_towards(d, np.array([side * 1.0, 0.0, 0.0]), _u(rng, 0, 15))
    return spec


def bending_over(rng: np.random.Generator) -> PoseSpec:
    tilt = _u(rng, 55, 80)
    spec = PoseSpec(root=rot_x(tilt), spine=(_u(rng, 10, 30), 0, 0), head=(_u(rng, -30, -10), 0, 0))
    down = rot_x(-tilt) @ np.array([0.0, -1.0, 0.0])  # world down, in the body frame
    for side, hip, knee in ((1, "left_hip", "left_knee"), (-1, "right_hip", "right_knee")):
        thigh = _unit(down + np.array([side * 0.08, 0.0, 0.0]))
        spec.aims[J[hip]], spec.aims[J[knee]] = (
            thigh,
            bend_towards(thigh, np.array([0, 0, -1.0]), _u(rng, 0, 20)),
        )
    for side, shoulder, elbow in ((1, "left_shoulder", "left_elbow"), (-1, "right_shoulder", "right_elbow")):
        # Arms hang straight towards the floor (aims are in the root's frame, whatever the spine does).
        d = _unit(down + np.array([side * _u(rng, 0.0, 0.2), 0.0, _u(rng, -0.1, 0.2)]))
        spec.aims[J[shoulder]] = spec.aims[J[elbow]] = d
    return spec


def lunge(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -5, 10), 0, 0), head=(_u(rng, -5, 10), 0, 0))
    _legs(
        spec,
        leg_dirs(_u(rng, 70, 90), _u(rng, 80, 100), 5, 1),
        leg_dirs(_u(rng, -45, -30), _u(rng, 0, 25), 5, -1),
    )
    if rng.random() < 0.5:
        _arms(spec, _arm(rng, 1, (55, 85), (0, 30), (0, 20)), _arm(rng, -1, (55, 85), (0, 30), (0, 20)))
    else:
        _arms_down(rng, spec)
    return spec


def hands_on_hips(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -5, 5), 0, 0), head=(_u(rng, -10, 10), 0, _u(rng, -20, 20)))
    _straight_legs(rng, spec, (6, 15))
    for side, name in ((1, "left"), (-1, "right")):
        # Elbows out and a little back; the forearm runs down and in, so the hand rests on the hip.
        upper = arm_dir(_u(rng, -60, -48), _u(rng, -30, -12), side)
        forearm = _unit(np.array([-0.48 * side, -0.81, 0.33]) + rng.normal(0.0, 0.06, size=3))
        spec.aims[J[f"{name}_shoulder"]], spec.aims[J[f"{name}_elbow"]] = upper, forearm
    return spec


def arms_crossed(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -5, 5), 0, 0), head=(_u(rng, -5, 10), 0, _u(rng, -20, 20)))
    _straight_legs(rng, spec)
    _arms(
        spec,
        _arm(rng, 1, (-75, -60), (15, 35), (115, 135), (-1, 0.3, 0.6)),
        _arm(rng, -1, (-75, -60), (15, 35), (115, 135), (1, 0.3, 0.6)),
    )
    return spec


def kicking(rng: np.random.Generator) -> PoseSpec:
    spec = PoseSpec(spine=(_u(rng, -15, 0), 0, 0), head=(_u(rng, 0, 15), 0, 0))
    _legs(
        spec,
        leg_dirs(_u(rng, 65, 90), _u(rng, 0, 20), 3, 1),
        leg_dirs(_u(rng, -5, 5), _u(rng, 5, 20), 5, -1),
    )
    _arms(spec, _arm(rng, 1, (-20, 10), (-40, -10), (0, 20)), _arm(rng, -1, (-20, 10), (0, 40), (0, 20)))
    return spec


def balancing(rng: np.random.Generator) -> PoseSpec:
    """Standing on the right leg, left foot against the right knee (yoga tree pose)."""
    spec = PoseSpec(spine=(_u(rng, -3, 3), 0, 0))
    thigh, _ = leg_dirs(_u(rng, 30, 50), 0.0, _u(rng, 35, 55), 1)
    # The shin folds inwards and down so that the foot rests against the standing leg.
    spec.aims[J["left_hip"]] = thigh
    spec.aims[J["left_knee"]] = bend_towards(thigh, np.array([-1.0, -0.6, 0.0]), _u(rng, 110, 135))
    spec.aims[J["right_hip"]], spec.aims[J["right_knee"]] = leg_dirs(_u(rng, -3, 3), _u(rng, 0, 6), 2, -1)
    if rng.random() < 0.5:
        _arms(
            spec,
            _arm(rng, 1, (60, 85), (0, 20), (5, 25), (-1, 0, 0)),
            _arm(rng, -1, (60, 85), (0, 20), (5, 25), (1, 0, 0)),
        )
    else:
        _arms(spec, _arm(rng, 1, (-10, 10), (-10, 10), (0, 10)), _arm(rng, -1, (-10, 10), (-10, 10), (0, 10)))
    return spec


@dataclass(frozen=True)
class Activity:
    """A named activity: how to sample it and how people describe it without naming joints."""

    name: str
    sample: Callable[[np.random.Generator], PoseSpec]
    phrase: str
    """Short verb phrase: "is kneeling on one knee"."""
    implicit: tuple[str, ...]
    """Implicit descriptions for the ``spg`` task ("this person is proposing marriage")."""
    upright: bool = True


ACTIVITIES: tuple[Activity, ...] = (
    Activity("standing", standing, "is standing", (
        "this person is waiting at a bus stop",
        "someone standing in line at the supermarket",
        "a person standing still, listening to a talk",
    )),
    Activity("t_pose", t_pose, "is standing in a T-pose", (
        "this person is pretending to be an airplane",
        "someone holding the calibration pose for a motion capture session",
        "a scarecrow in a field",
    )),
    Activity("arms_raised", arms_raised, "is raising both arms", (
        "this person is celebrating a goal",
        "someone cheering at a concert",
        "a person surrendering to the police",
    )),
    Activity("waving", waving, "is waving", (
        "this person is waving hello to a friend",
        "someone saying goodbye at the train station",
        "a person greeting a neighbour across the street",
    )),
    Activity("reaching", reaching, "is reaching forward", (
        "this person is trying to grab something from a high shelf",
        "someone reaching out to take a cup",
        "a person pointing at something in front of them",
    )),
    Activity("walking", walking, "is walking", (
        "this person is strolling in the park",
        "someone walking to work",
        "a person taking a step forward",
    )),
    Activity("running", running, "is running", (
        "this person is jogging in the morning",
        "someone sprinting to catch a bus",
        "an athlete running a race",
    )),
    Activity("sitting", sitting, "is sitting on a chair", (
        "this person is sitting at a desk",
        "someone waiting in a chair at the doctor's office",
        "a person seated at the dinner table",
    )),
    Activity("sitting_floor", sitting_floor, "is sitting on the ground with legs stretched out", (
        "this person is relaxing on the beach",
        "someone resting on the grass after a picnic",
        "a person sitting on the floor, leaning back on their hands",
    )),
    Activity("kneeling", kneeling, "is kneeling on both knees", (
        "this person is praying in a church",
        "someone kneeling to weed the garden",
        "a person kneeling on the floor",
    )),
    Activity("proposing", proposing, "is kneeling on one knee", (
        "this person is proposing marriage",
        "someone going down on one knee to offer a ring",
        "a knight kneeling before the king",
    )),
    Activity("squatting", squatting, "is squatting", (
        "this person is doing a squat at the gym",
        "someone crouching down to look under a table",
        "a person squatting with arms held out for balance",
    )),
    Activity("lying", lying, "is lying on their back", (
        "this person is sunbathing on the beach",
        "someone sleeping on the floor",
        "a person resting on a yoga mat",
    ), upright=False),
    Activity("push_up", push_up, "is doing a push-up", (
        "this person is doing push-ups",
        "someone holding a plank during a workout",
        "a soldier exercising on the ground",
    ), upright=False),
    Activity("bending_over", bending_over, "is bending forward", (
        "this person is picking something up from the floor",
        "someone touching their toes",
        "a person bending down to tie their shoelaces",
    )),
    Activity("lunge", lunge, "is doing a lunge", (
        "this person is stretching before a run",
        "someone doing lunges at the gym",
        "a fencer lunging at an opponent",
    )),
    Activity("hands_on_hips", hands_on_hips, "is standing with hands on the hips", (
        "this person is waiting impatiently",
        "someone striking a superhero pose",
        "a coach watching the team train",
    )),
    Activity("arms_crossed", arms_crossed, "is standing with arms crossed", (
        "this person is waiting, looking bored",
        "someone listening sceptically",
        "a bouncer guarding the door",
    )),
    Activity("kicking", kicking, "is kicking", (
        "this person is kicking a ball",
        "someone practising a karate kick",
        "a person kicking a door open",
    )),
    Activity("balancing", balancing, "is balancing on one leg", (
        "this person is doing yoga in the tree pose",
        "someone standing on one leg like a flamingo",
        "a person balancing on one foot",
    )),
)  # fmt: skip

ACTIVITY_BY_NAME = {a.name: a for a in ACTIVITIES}


def sample_activity_pose(
    activity: Activity, rng: np.random.Generator, mirror: bool, noise_deg: float = 3.0
) -> np.ndarray:
    """(24, 3) canonical-frame pose of one activity, left-right mirrored when asked, small joint noise."""
    pose = build_pose(activity.sample(rng))
    noise = rng.normal(0.0, math.radians(noise_deg), size=(NUM_JOINTS, 3))
    # The root is the activity's orientation; SMPL's hand joints stay at rest (SMPL-H has fingers there).
    noise[[0, J["left_hand"], J["right_hand"]]] = 0.0
    pose[1:] = matrix_to_rotvec(rotvec_to_matrix(noise[1:]) @ rotvec_to_matrix(pose[1:]))
    return mirror_pose(pose) if mirror else pose


def root_matrix(pose: np.ndarray) -> np.ndarray:
    return rotvec_to_matrix(np.asarray(pose).reshape(-1, 3)[0])


def with_root(pose: np.ndarray, root: np.ndarray) -> np.ndarray:
    """A copy of ``pose`` (24, 3) whose root rotation is the 3×3 ``root``."""
    out = np.array(pose, dtype=np.float64).reshape(NUM_JOINTS, 3).copy()
    out[0] = matrix_to_rotvec(root)
    return out


def to_camera(pose: np.ndarray, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """Canonical pose → camera frame: root ``Rx(pitch)·Ry(yaw)·Rx(180°)·A``."""
    root = rot_x(pitch_deg) @ rot_y(yaw_deg) @ rot_x(180.0) @ root_matrix(pose)
    return with_root(pose, root)


def to_amass(pose: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Canonical pose → AMASS z-up world: root ``Rz(yaw)·Rx(+90°)·A``."""
    return with_root(pose, rot_z(yaw_deg) @ rot_x(90.0) @ root_matrix(pose))


def slerp_track(keys: np.ndarray, frames: int) -> np.ndarray:
    """(T, J, 3): per-joint spherical interpolation through the (K, J, 3) key poses, evenly in time."""
    keys = np.asarray(keys, dtype=np.float64)
    n_seg = keys.shape[0] - 1
    u = np.linspace(0.0, n_seg, frames)
    seg = np.minimum(u.astype(int), n_seg - 1)
    t = (u - seg)[:, None, None]
    mats = rotvec_to_matrix(keys)  # (K, J, 3, 3)
    rel = matrix_to_rotvec(np.swapaxes(mats[:-1], -1, -2) @ mats[1:])  # (K-1, J, 3): from one key to the next
    step = rotvec_to_matrix(rel[seg] * t)
    return matrix_to_rotvec(mats[seg] @ step)
