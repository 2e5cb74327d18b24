"""The bundled default body: a procedural model in SMPL's file format.

SMPL's model files are licensed and cannot ship with the project, so the default
body is generated here, deterministically, from SMPL's 24-joint tree and rest joint
positions close to SMPL's neutral model (metres, pelvis at the origin, y up, facing
+z, the person's left on +x, arms out in a T). The mesh is a set of closed tapered
capsules around the bones (head, neck, torso, limbs, hands, feet and a nose that
shows which way the body faces), exactly 6890 vertices like SMPL, so that smplx's
extra-joint vertex indices stay valid. Skinning weights blend the bones near each
part, ``J_regressor`` averages a ring of vertices around each joint (corrected so
that it reproduces the rest joints exactly), six shape directions (height, girth,
shoulder width, leg length, belly, head size) fill ``shapedirs``, and the pose
correctives are zero.

Each capsule is triangulated by taking the convex hull of Fibonacci points on the
unit sphere (every point lies on the hull, for any point count) and mapping the
sphere onto the capsule by equal area along its profile, keeping the azimuth; the
map is a homeomorphism, so the hull's triangles stay a valid closed surface.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from posegpt.body.skeleton import JOINT_INDEX, NUM_BETAS, NUM_JOINTS, PARENTS

GENERATOR_VERSION = "procedural-smpl-neutral-v1"
"""Stored in the file; bump it whenever the generated arrays change."""

NUM_VERTICES = 6890
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)

# Offsets from the parent joint for the left side and the spine (metres); the right
# side mirrors x. Values follow SMPL's neutral template, rounded and made symmetric.
_OFFSETS: dict[str, tuple[float, float, float]] = {
    "pelvis": (0.0, 0.0, 0.0),
    "left_hip": (0.060, -0.088, -0.012),
    "spine1": (0.0, 0.115, -0.035),
    "left_knee": (0.042, -0.378, 0.004),
    "spine2": (0.0, 0.135, 0.012),
    "left_ankle": (-0.013, -0.400, -0.042),
    "spine3": (0.0, 0.055, 0.003),
    "left_foot": (0.030, -0.058, 0.122),
    "neck": (0.0, 0.215, -0.033),
    "left_collar": (0.075, 0.117, -0.025),
    "head": (0.0, 0.068, 0.050),
    "left_shoulder": (0.100, 0.033, -0.010),
    "left_elbow": (0.258, -0.014, -0.024),
    "left_wrist": (0.250, 0.010, -0.002),
    "left_hand": (0.085, -0.006, -0.015),
}


def rest_joints() -> np.ndarray:
    """(24, 3) rest joint positions of the procedural body."""
    joints = np.zeros((NUM_JOINTS, 3))
    for j, name in enumerate(JOINT_INDEX):
        if name.startswith("right_"):
            offset = np.array(_OFFSETS["left_" + name[len("right_") :]]) * (-1.0, 1.0, 1.0)
        else:
            offset = np.array(_OFFSETS[name])
        parent = PARENTS[j]
        joints[j] = offset if parent < 0 else joints[parent] + offset
    return joints


@dataclass(frozen=True)
class _Capsule:
    """A closed tapered capsule from ``start`` to ``end`` (see ``_capsule_mesh``)."""

    name: str
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    r_start: float
    r_end: float
    joints: tuple[int, ...]
    """Joints whose bones may skin this part (the owner first)."""
    count: int
    """Vertices; 0 for the part that takes whatever remains of the 6890."""
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    """Reference direction for the cross-section's first axis."""
    squash: tuple[float, float] = (1.0, 1.0)
    """Cross-section scale along the first axis (``up`` made orthogonal) and the second."""
    caps: tuple[float, float] = (1.0, 1.0)
    """Axial extent of the start and end caps, as a fraction of their radius."""


def _mirror(p: tuple[float, float, float] | np.ndarray) -> tuple[float, float, float]:
    return (-float(p[0]), float(p[1]), float(p[2]))


def _t(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))


def _at(p: np.ndarray, dx: float, dy: float, dz: float) -> tuple[float, float, float]:
    """The point ``p`` moved by ``(dx, dy, dz)``."""
    return _t(p + np.array([dx, dy, dz]))


def _parts(j: np.ndarray) -> list[_Capsule]:
    i = JOINT_INDEX
    head, neck = j[i["head"]], j[i["neck"]]

    def at(name: str) -> tuple[float, float, float]:
        return _t(j[i[name]])

    # One part per line: name, start, end, radii at start and end, skinning joints, vertices.
    # fmt: off
    parts = [
        _Capsule("head", _at(head, 0, 0.02, 0.02), _at(head, 0, 0.11, 0.005), 0.07, 0.085, (15, 12), 620,
                 squash=(0.95, 1.0)),
        _Capsule("nose", _at(head, 0, 0.045, 0.085), _at(head, 0, 0.07, 0.1), 0.014, 0.012, (15,), 60),
        _Capsule("neck", _at(neck, 0, -0.04, 0.0), _at(head, 0, 0.02, 0.01), 0.056, 0.05, (12, 9, 15), 220),
        # The trunk: elliptic sections, wide along x, with flattened caps.
        _Capsule("abdomen", (0.0, -0.06, -0.005), (0.0, 0.2, -0.02), 0.15, 0.145, (0, 3, 6, 1, 2), 820,
                 up=(0.0, 0.0, 1.0), squash=(0.72, 1.0), caps=(0.55, 0.4)),
        _Capsule("chest", (0.0, 0.17, -0.025), (0.0, 0.45, -0.045), 0.15, 0.165, (6, 9, 3, 12, 13, 14), 0,
                 up=(0.0, 0.0, 1.0), squash=(0.68, 1.0), caps=(0.4, 0.45)),
    ]
    left = [
        _Capsule("left_collar", at("left_collar"), at("left_shoulder"), 0.058, 0.06, (13, 9, 16), 150),
        _Capsule("left_upper_arm", at("left_shoulder"), at("left_elbow"), 0.052, 0.042, (16, 13, 18), 330),
        _Capsule("left_forearm", at("left_elbow"), at("left_wrist"), 0.042, 0.031, (18, 16, 20), 280),
        # Flat hand, palm down in the T pose: thin along y, wide along z.
        _Capsule("left_hand", at("left_wrist"), _at(j[i["left_hand"]], 0.075, -0.004, -0.005), 0.03, 0.03,
                 (20, 22, 18), 200, squash=(0.5, 1.4), caps=(0.8, 1.0)),
        _Capsule("left_thigh", at("left_hip"), at("left_knee"), 0.085, 0.055, (1, 0, 4), 560, up=(0.0, 0.0, 1.0)),
        _Capsule("left_shin", at("left_knee"), at("left_ankle"), 0.052, 0.037, (4, 1, 7), 420, up=(0.0, 0.0, 1.0)),
        # Heel to toe, flat: low along y, wider along x.
        _Capsule("left_foot", _at(j[i["left_ankle"]], 0, -0.035, -0.045), _at(j[i["left_foot"]], 0, -0.015, 0.07),
                 0.036, 0.034, (7, 10, 4), 230, squash=(0.8, 1.25)),
    ]
    # fmt: on
    for part in left:
        parts += [part, _mirrored(part)]
    return parts


def _mirrored(part: _Capsule) -> _Capsule:
    """The right-side twin of a left-side part (x mirrored, joints swapped)."""
    return dataclasses.replace(
        part,
        name="right_" + part.name.removeprefix("left_"),
        start=_mirror(part.start),
        end=_mirror(part.end),
        joints=tuple(_mirror_joint(k) for k in part.joints),
        up=_mirror(part.up),
    )


def _mirror_joint(j: int) -> int:
    name = next(n for n, k in JOINT_INDEX.items() if k == j)
    if name.startswith("left_"):
        return JOINT_INDEX["right_" + name[5:]]
    if name.startswith("right_"):
        return JOINT_INDEX["left_" + name[6:]]
    return j


def _sphere_mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fibonacci points on the unit sphere (bottom to top) and outward triangles."""
    from scipy.spatial import ConvexHull  # only needed when generating

    k = np.arange(n, dtype=np.float64)
    z = -1.0 + (2.0 * k + 1.0) / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    rho = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    pts = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)
    tri = ConvexHull(pts).simplices.astype(np.int64)
    if len(np.unique(tri)) != n:
        raise RuntimeError(f"sphere triangulation of {n} points left points off the hull")
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    inward = (np.cross(b - a, c - a) * (a + b + c)).sum(1) < 0
    tri[inward] = tri[inward][:, [0, 2, 1]]
    return pts, tri


def _capsule_mesh(part: _Capsule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (n, 3), outward triangles, and the point on the axis each vertex surrounds."""
    pts, tri = _sphere_mesh(part.count)
    start, end = np.array(part.start), np.array(part.end)
    axis = end - start
    length = float(np.linalg.norm(axis))
    axis /= length
    up = np.array(part.up, dtype=np.float64)
    e1 = up - (up @ axis) * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)

    # Profile (axial position u, radius r) from the start pole to the end pole.
    theta = np.linspace(0.0, math.pi / 2, 200)
    r0, r1 = part.r_start, part.r_end
    u = np.concatenate(
        [
            -part.caps[0] * r0 * np.cos(theta),
            np.linspace(0.0, length, 200)[1:-1],
            length + part.caps[1] * r1 * np.cos(theta[::-1]),
        ]
    )
    r = np.concatenate(
        [r0 * np.sin(theta), r0 + (r1 - r0) * np.linspace(0.0, 1.0, 200)[1:-1], r1 * np.sin(theta[::-1])]
    )
    ds = np.hypot(np.diff(u), np.diff(r))
    area = np.concatenate([[0.0], np.cumsum(ds * (r[1:] + r[:-1]) / 2.0)])
    area /= area[-1]
    frac = (pts[:, 2] + 1.0) / 2.0  # Fibonacci latitudes are uniform in area
    uu = np.interp(frac, area, u)
    rr = np.interp(frac, area, r)
    az = np.arctan2(pts[:, 1], pts[:, 0])
    centre = start + uu[:, None] * axis
    offset = rr[:, None] * (
        np.cos(az)[:, None] * part.squash[0] * e1 + np.sin(az)[:, None] * part.squash[1] * e2
    )
    return centre + offset, tri, centre


def _bone_segments(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of the bone each joint rotates (leaf joints get a short extension)."""
    i = JOINT_INDEX
    main_child = {0: 3, 9: 12}
    for j, p in enumerate(PARENTS):
        if p >= 0:
            main_child.setdefault(p, j)
    leaf_extension = {
        i["head"]: (0.0, 0.17, 0.0),
        i["left_hand"]: (0.08, 0.0, 0.0),
        i["right_hand"]: (-0.08, 0.0, 0.0),
        i["left_foot"]: (0.0, -0.01, 0.08),
        i["right_foot"]: (0.0, -0.01, 0.08),
    }
    ends = np.array(
        [
            joints[main_child[j]] if j in main_child else joints[j] + leaf_extension[j]
            for j in range(NUM_JOINTS)
        ]
    )
    return joints.copy(), ends


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _skinning_weights(
    verts: np.ndarray, part_joints: list[tuple[int, ...]], part_of: np.ndarray, joints: np.ndarray
) -> np.ndarray:
    """Soft assignment to the nearest bones among each part's candidates."""
    starts, ends = _bone_segments(joints)
    weights = np.zeros((len(verts), NUM_JOINTS))
    sigma = 0.018  # metres over which neighbouring bones blend
    for p, cands in enumerate(part_joints):
        idx = np.nonzero(part_of == p)[0]
        d = np.stack([_segment_distance(verts[idx], starts[j], ends[j]) for j in cands], axis=1)
        w = np.exp(-(d - d.min(axis=1, keepdims=True)) / sigma)
        w[w < 0.01] = 0.0
        weights[np.ix_(idx, list(cands))] = w / w.sum(axis=1, keepdims=True)
    return weights


def _joint_regressor(
    verts: np.ndarray, part_of: np.ndarray, parts: list[_Capsule], joints: np.ndarray
) -> np.ndarray:
    """Rows averaging a ring of vertices around each joint, corrected to hit it exactly.

    The ring (vertices of the parts around the joint, in a slab across its bone)
    keeps the joint in the middle of the limb when shape directions move the
    surface; the minimum-norm affine correction then makes ``J_regressor @ v``
    equal the rest joint.
    """
    starts, ends = _bone_segments(joints)
    reg = np.zeros((NUM_JOINTS, len(verts)))
    for j in range(NUM_JOINTS):
        hosts = [p for p, part in enumerate(parts) if j in part.joints[:2]]
        cand = np.nonzero(np.isin(part_of, hosts))[0]
        direction = ends[j] - starts[j]
        direction /= np.linalg.norm(direction)
        along = np.abs((verts[cand] - joints[j]) @ direction)
        band = 0.01
        while (along < band).sum() < 24:
            band *= 1.5
        ring = cand[along < band]
        a = np.vstack([verts[ring].T, np.ones(len(ring))])  # (4, K)
        w0 = np.full(len(ring), 1.0 / len(ring))
        b = np.append(joints[j], 1.0)
        w = w0 + np.linalg.lstsq(a, b - a @ w0, rcond=None)[0]
        reg[j, ring] = w
    err = np.abs(reg @ verts - joints).max()
    if err > 1e-9:
        raise RuntimeError(f"procedural J_regressor misses the rest joints by {err:.2e} m")
    return reg


def _shape_directions(
    verts: np.ndarray, centres: np.ndarray, parts: list[_Capsule], part_of: np.ndarray, joints: np.ndarray
) -> np.ndarray:
    """(V, 3, 10): height, girth, shoulder width, leg length, belly, head size, then zeros."""
    dirs = np.zeros((len(verts), 3, NUM_BETAS))
    names = [parts[p].name for p in part_of]
    x, y, z = verts.T
    # 0: height: stretch about the pelvis, mostly vertically.
    dirs[:, :, 0] = verts * (0.015, 0.06, 0.015)
    # 1: girth: push the surface out from each part's axis (more on the trunk).
    radial = verts - centres
    trunk = np.isin(names, ["abdomen", "chest", "neck"])
    dirs[:, :, 1] = radial * np.where(trunk, 0.16, 0.1)[:, None]
    # 2: shoulder width: arms and collars slide outwards along x.
    arm = np.array([n.endswith(("collar", "upper_arm", "forearm", "hand")) for n in names])
    dirs[arm, 0, 2] = 0.02 * np.sign(x[arm])
    # 3: leg length: stretch everything below the pelvis downwards.
    below = y < 0
    dirs[below, 1, 3] = 0.07 * y[below]
    # 4: belly: push the front of the trunk forward around the navel.
    front = trunk & (z > joints[0, 2])
    dirs[front, 2, 4] = 0.03 * np.exp(-(((y[front] - 0.12) / 0.12) ** 2)) * (z[front] - joints[0, 2]) / 0.1
    # 5: head size: scale the head and nose about the head's centre.
    head = np.isin(names, ["head", "nose"])
    centre = np.array(_at(joints[JOINT_INDEX["head"]], 0.0, 0.07, 0.01))
    dirs[head, :, 5] = 0.08 * (verts[head] - centre)
    return dirs


def generate() -> dict[str, np.ndarray]:
    """The procedural body as SMPL's arrays (keys and shapes of an official SMPL file)."""
    joints = rest_joints()
    parts = _parts(joints)
    fixed = sum(p.count for p in parts)
    remainder = NUM_VERTICES - fixed
    if remainder < 100:
        raise RuntimeError(
            f"the fixed parts take {fixed} of {NUM_VERTICES} vertices: too few left for the chest"
        )
    parts = [
        dataclasses.replace(p, count=remainder) if p.count == 0 else p  # the chest takes the rest
        for p in parts
    ]
    verts, faces, centres, part_of = [], [], [], []
    offset = 0
    for p, part in enumerate(parts):
        v, f, c = _capsule_mesh(part)
        verts.append(v)
        faces.append(f + offset)
        centres.append(c)
        part_of.append(np.full(len(v), p))
        offset += len(v)
    v_template = np.concatenate(verts)
    part_index = np.concatenate(part_of)
    weights = _skinning_weights(v_template, [p.joints for p in parts], part_index, joints)
    j_regressor = _joint_regressor(v_template, part_index, parts, joints)
    shapedirs = _shape_directions(v_template, np.concatenate(centres), parts, part_index, joints)
    kintree = np.array([[4294967295, *PARENTS[1:]], list(range(NUM_JOINTS))], dtype=np.int64)
    return {
        "v_template": v_template,
        "f": np.concatenate(faces).astype(np.uint32),
        "weights": weights,
        "J_regressor": j_regressor,
        "J": joints,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((NUM_VERTICES, 3, NUM_POSE_BASIS)),
        "kintree_table": kintree,
        "bs_type": np.array("lrotmin"),
        "bs_style": np.array("lbs"),
        "generator": np.array(GENERATOR_VERSION),
    }
