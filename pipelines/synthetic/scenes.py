"""People in front of a camera: sampling, placing and rendering one or several posed bodies.

The camera is a pinhole at the origin of the camera frame (x right, y down, z
forward) with focal length ``FOCAL_FACTOR × image size``. A person's pose in that
frame has root ``Rx(pitch)·Ry(yaw)·Rx(180°)·A``: the activity's orientation ``A``,
turned upright for a y-down camera, seen from a camera turned by ``yaw`` about the
vertical and tilted by ``pitch``. That camera-frame pose is what the SPIN/HMR2
files store, so the global orientation includes the camera rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.synthetic.appearance import BodyPaint, Outfit, random_outfit
from pipelines.synthetic.captioner import Posecodes, posecodes
from pipelines.synthetic.poses import ACTIVITIES, Activity, sample_activity_pose, to_camera
from pipelines.synthetic.threads import single_thread
from posegpt.body.model import BodyModel
from posegpt.body.skeleton import NUM_BETAS
from posegpt.render import rasterize

FOCAL_FACTOR = 1.5
"""Focal length in units of the image size (a field of view of about 37°)."""

SPIN_PADDING = 1.2
"""SPIN's ``scale`` is this padding × the box's longer side / 200."""


@dataclass
class Person:
    """One posed, dressed person, before placement."""

    activity: Activity
    canonical: np.ndarray
    """(24, 3) pose in the canonical frame (y up)."""
    camera_pose: np.ndarray
    """(24, 3) pose in the camera frame (what the datasets store)."""
    betas: np.ndarray
    yaw_deg: float
    pitch_deg: float
    outfit: Outfit
    codes: Posecodes | None = None

    @property
    def facing(self) -> str:
        """Which way the body faces, as a viewer of the image sees it."""
        yaw = (self.yaw_deg + 180.0) % 360.0 - 180.0
        if abs(yaw) <= 45:
            return "towards the camera"
        if abs(yaw) >= 135:
            return "away from the camera"
        # Ry(+90°) turns a body that faced the camera towards -x: the left of the image.
        return "towards the left of the image" if yaw > 0 else "towards the right of the image"


def sample_person(
    rng: np.random.Generator,
    activities: tuple[Activity, ...] = ACTIVITIES,
    avoid_shirts: tuple[str, ...] = (),
    betas_scale: float = 0.8,
    pitch_deg: float | None = None,
) -> Person:
    """A random person; ``pitch_deg`` None draws a camera tilt between -8° and 15°."""
    activity = activities[int(rng.integers(len(activities)))]
    canonical = sample_activity_pose(activity, rng, mirror=bool(rng.random() < 0.5))
    yaw = float(rng.uniform(-180.0, 180.0))
    pitch = float(rng.uniform(-8.0, 15.0)) if pitch_deg is None else pitch_deg
    betas = np.clip(rng.normal(0.0, betas_scale, size=NUM_BETAS), -2.0, 2.0)
    return Person(
        activity=activity,
        canonical=canonical,
        camera_pose=to_camera(canonical, yaw, pitch),
        betas=betas,
        yaw_deg=yaw,
        pitch_deg=pitch,
        outfit=random_outfit(rng, avoid_shirts),
    )


def pose_people(body: BodyModel, people: list[Person]) -> list[np.ndarray]:
    """Camera-frame vertices of each person with the pelvis at the origin; fills ``codes``.

    Posecodes come from the canonical pose with betas 0, like PoseScript's captions.
    """
    if not people:
        return []
    cam = torch.as_tensor(np.stack([p.camera_pose.reshape(-1) for p in people]), dtype=torch.float32)
    betas = torch.as_tensor(np.stack([p.betas for p in people]), dtype=torch.float32)
    canon = torch.as_tensor(np.stack([p.canonical.reshape(-1) for p in people]), dtype=torch.float32)
    with single_thread():
        out = body.mesh(cam, betas)
        joints = body.joints(canon).numpy()
    verts = out.vertices.numpy().astype(np.float64)
    pelvis = out.joints[:, 0].numpy().astype(np.float64)
    for person, jt in zip(people, joints, strict=True):
        person.codes = posecodes(jt)
    return [v - c for v, c in zip(verts, pelvis, strict=True)]


def project_box(vertices: np.ndarray, translation: np.ndarray, focal: float, size: int) -> np.ndarray:
    """Tight image box ``[x0, y0, x1, y1]`` of the vertices placed at ``translation``."""
    p = vertices + translation
    u = focal * p[:, 0] / p[:, 2] + size / 2.0
    v = focal * p[:, 1] / p[:, 2] + size / 2.0
    return np.array([u.min(), v.min(), u.max(), v.max()])


def _place(
    vertices: np.ndarray, focal: float, size: int, max_w: float, max_h: float, centre: tuple[float, float]
) -> np.ndarray:
    """A translation that fits the body in ``max_w × max_h`` pixels with its box centred at ``centre``."""
    t = np.array([0.0, 0.0, 4.0])
    for _ in range(3):  # perspective makes each step approximate; three converge to a pixel or so
        x0, y0, x1, y1 = project_box(vertices, t, focal, size)
        grow = max((x1 - x0) / max_w, (y1 - y0) / max_h)
        t[2] *= grow
        x0, y0, x1, y1 = project_box(vertices, t, focal, size)
        t[0] += (centre[0] - (x0 + x1) / 2.0) * t[2] / focal
        t[1] += (centre[1] - (y0 + y1) / 2.0) * t[2] / focal
    return t


def place_single(vertices: np.ndarray, focal: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """A person filling 45–85% of the image, somewhere fully inside it."""
    side = rng.uniform(0.45, 0.85) * size
    t = _place(vertices, focal, size, side, side, (size / 2.0, size / 2.0))
    x0, y0, x1, y1 = project_box(vertices, t, focal, size)
    margin = 4.0
    cx = (
        rng.uniform(margin + (x1 - x0) / 2, size - margin - (x1 - x0) / 2)
        if x1 - x0 < size - 2 * margin
        else size / 2
    )
    cy = (
        rng.uniform(margin + (y1 - y0) / 2, size - margin - (y1 - y0) / 2)
        if y1 - y0 < size - 2 * margin
        else size / 2
    )
    return _place(vertices, focal, size, side, side, (cx, cy))


def place_row(
    vertices: list[np.ndarray], focal: float, size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """People side by side on one floor at about one depth, one per vertical slot, left to right.

    Bodies must be posed with a level camera (pitch 0), so that the floor is a plane
    of constant y. The depth is the smallest that fits every body in its slot, so
    relative sizes stay true (a kneeling person looks smaller than a standing one).
    """
    n = len(vertices)
    slot = size / n
    depth = 3.0
    for v in vertices:
        width = v[:, 0].max() - v[:, 0].min()
        height = v[:, 1].max() - v[:, 1].min()
        # Pixels at depth z are focal * metres / z (nearest points make it a little larger: 10% spare).
        depth = max(depth, 1.1 * focal * width / (0.85 * slot), 1.1 * focal * height / (0.8 * size))
    out = []
    for k, v in enumerate(vertices):
        z = depth * rng.uniform(1.0, 1.12)
        x = (slot * (k + 0.5) + rng.uniform(-0.05, 0.05) * slot - size / 2.0) * z / focal
        # Feet on the floor: the lowest point (largest y) of every body at y = 0 for now.
        out.append(np.array([x, -v[:, 1].max(), z]))
    boxes = np.array([project_box(v, t, focal, size) for v, t in zip(vertices, out, strict=True)])
    top, bottom = boxes[:, 1].min(), boxes[:, 3].max()
    # Raise or lower the floor so the group sits in the image, its centre near the middle.
    target = size * rng.uniform(0.47, 0.53) - (top + bottom) / 2.0
    floor = target * depth / focal
    for t in out:
        t[1] += floor
    return out


def render_people(
    vertices: list[np.ndarray],
    translations: list[np.ndarray],
    colors: list[np.ndarray],
    paint: BodyPaint,
    size: int,
    background: np.ndarray,
) -> np.ndarray:
    """Composite people into the background with one depth buffer: (size, size, 3) uint8."""
    focal = FOCAL_FACTOR * size
    image, depth = background, None
    for v, t, c in zip(vertices, translations, colors, strict=True):
        result = rasterize(v + t, paint.faces, c, focal, (size, size), background=image, depth=depth)
        image, depth = result.image, result.depth
    return image


def spin_scale(box: np.ndarray) -> float:
    """SPIN's ``scale``: padded box size / 200."""
    return float(SPIN_PADDING * max(box[2] - box[0], box[3] - box[1]) / 200.0)


def box_centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
