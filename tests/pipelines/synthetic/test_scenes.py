"""Placing and rendering people: boxes agree with the pixels drawn."""

from __future__ import annotations

import numpy as np

from pipelines.synthetic.appearance import BodyPaint
from pipelines.synthetic.poses import ACTIVITIES
from pipelines.synthetic.scenes import (
    FOCAL_FACTOR,
    place_row,
    place_single,
    pose_people,
    project_box,
    sample_person,
)
from posegpt.body.model import default_body_model
from posegpt.render import rasterize

SIZE = 128


def _paint() -> BodyPaint:
    body = default_body_model()
    return BodyPaint(body.faces, body.skinning_weights.numpy(), body.smpl.v_template.numpy())


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def test_single_person_box_matches_the_rendered_silhouette() -> None:
    body, paint = default_body_model(), _paint()
    focal = FOCAL_FACTOR * SIZE
    for seed in range(4):
        rng = np.random.default_rng(seed)
        person = sample_person(rng)
        (verts,) = pose_people(body, [person])
        t = place_single(verts, focal, SIZE, rng)
        res = rasterize(verts + t, paint.faces, paint.face_colors(person.outfit), focal, (SIZE, SIZE))
        box = project_box(verts, t, focal, SIZE)
        assert np.abs(_mask_box(res.mask) - box).max() <= 1.01, person.activity.name
        # Fully inside the image and 45-85% of its size along the longer side.
        assert box.min() >= 0 and box.max() <= SIZE
        assert 0.4 * SIZE <= max(box[2] - box[0], box[3] - box[1]) <= 0.9 * SIZE
        assert person.codes is not None


def test_row_of_people_left_to_right_on_one_floor() -> None:
    body = default_body_model()
    rng = np.random.default_rng(1)
    upright = tuple(a for a in ACTIVITIES if a.name in ("standing", "t_pose", "walking"))
    people = [sample_person(rng, activities=(a,), pitch_deg=0.0) for a in upright]
    verts = pose_people(body, people)
    focal = FOCAL_FACTOR * SIZE
    trans = place_row(verts, focal, SIZE, rng)
    boxes = np.array([project_box(v, t, focal, SIZE) for v, t in zip(verts, trans, strict=True)])
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    assert np.all(np.diff(centres) > 0)
    assert boxes[:, [0, 1]].min() >= 0 and boxes[:, [2, 3]].max() <= SIZE
    # Feet on one floor: the lowest points of all bodies share a camera-frame height.
    floors = [float((v + t)[:, 1].max()) for v, t in zip(verts, trans, strict=True)]
    assert max(floors) - min(floors) < 1e-6
