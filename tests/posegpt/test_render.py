"""The numpy rasteriser, body views, OBJ export and report panels."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from posegpt.body.model import default_body_model
from posegpt.render import (
    DEFAULT_LIGHT,
    PART_COLORS,
    mesh_to_obj,
    part_face_colors,
    rasterize,
    render_views,
    side_by_side,
    vertex_normals,
    write_obj,
)

SIZE = 64
FOCAL = 80.0


def quad(z: float, half: float = 0.5, cx: float = 0.0, cy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A square facing the camera at depth z, two triangles."""
    v = np.array(
        [
            [cx - half, cy - half, z],
            [cx + half, cy - half, z],
            [cx + half, cy + half, z],
            [cx - half, cy + half, z],
        ]
    )
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_triangle_coverage_and_lambert_colour() -> None:
    v, f = quad(2.0, half=0.4)
    colors = np.full((2, 3), 0.5)
    res = rasterize(v, f, colors, FOCAL, (SIZE, SIZE), background=(0, 0, 0), ambient=0.3, diffuse=0.6)
    # Side in pixels: focal * 0.8 / 2 = 32, centred on the image centre.
    assert res.mask.sum() == pytest.approx(32 * 32, abs=2 * 32)
    ys, xs = np.nonzero(res.mask)
    assert xs.mean() == pytest.approx(SIZE / 2 - 0.5, abs=0.6)
    assert ys.mean() == pytest.approx(SIZE / 2 - 0.5, abs=0.6)
    # Normal towards the camera (-z): shade = ambient + diffuse * max(0, n . light).
    light = np.asarray(DEFAULT_LIGHT) / np.linalg.norm(DEFAULT_LIGHT)
    expected = 0.5 * (0.3 + 0.6 * max(0.0, float(np.array([0, 0, -1.0]) @ light)))
    assert np.abs(res.image[res.mask].astype(float) / 255 - expected).max() < 1.5 / 255
    assert np.all(res.image[~res.mask] == 0)
    assert np.allclose(res.depth[res.mask], 2.0, atol=1e-5)
    assert np.isinf(res.depth[~res.mask]).all()


def test_projection_of_an_offset_triangle() -> None:
    # A small square centred at (0.3, -0.2, 2): should land at f*X/Z + c.
    v, f = quad(2.0, half=0.05, cx=0.3, cy=-0.2)
    res = rasterize(v, f, np.ones((2, 3)), FOCAL, (SIZE, SIZE), center=(30.0, 34.0))
    ys, xs = np.nonzero(res.mask)
    assert xs.mean() + 0.5 == pytest.approx(FOCAL * 0.3 / 2 + 30.0, abs=0.6)
    assert ys.mean() + 0.5 == pytest.approx(FOCAL * -0.2 / 2 + 34.0, abs=0.6)


@pytest.mark.parametrize("near_first", [True, False])
def test_depth_test_is_independent_of_draw_order(near_first: bool) -> None:
    near_v, near_f = quad(2.0, half=0.3, cx=-0.1)
    far_v, far_f = quad(3.0, half=0.6, cx=0.2)
    meshes = [(near_v, near_f, (1.0, 0.0, 0.0)), (far_v, far_f, (0.0, 0.0, 1.0))]
    if not near_first:
        meshes.reverse()
    v = np.concatenate([m[0] for m in meshes])
    f = np.concatenate([meshes[0][1], meshes[1][1] + 4])
    colors = np.array([meshes[0][2]] * 2 + [meshes[1][2]] * 2)
    res = rasterize(v, f, colors, FOCAL, (SIZE, SIZE))
    centre = res.image[SIZE // 2 - 2, SIZE // 2 - 6]
    assert centre[0] > 0 and centre[2] == 0, "the nearer red square must win where they overlap"
    # Composited over two calls with the depth buffer: the same picture.
    first = rasterize(meshes[0][0], meshes[0][1], np.array([meshes[0][2]] * 2), FOCAL, (SIZE, SIZE))
    second = rasterize(
        meshes[1][0],
        meshes[1][1],
        np.array([meshes[1][2]] * 2),
        FOCAL,
        (SIZE, SIZE),
        background=first.image,
        depth=first.depth,
    )
    assert np.array_equal(second.image, res.image)


def test_perspective_correct_depth_on_a_tilted_plane() -> None:
    # Plane z = 2 + 0.5 x: the depth at each pixel is where its ray meets the plane.
    v = np.array([[-1.0, -1.0, 1.5], [1.0, -1.0, 2.5], [1.0, 1.0, 2.5], [-1.0, 1.0, 1.5]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    res = rasterize(v, f, np.ones((2, 3)), FOCAL, (SIZE, SIZE))
    ys, xs = np.nonzero(res.mask)
    rx = (xs + 0.5 - SIZE / 2) / FOCAL
    expected = 2.0 / (1.0 - 0.5 * rx)  # z = 2 + 0.5 * rx * z
    assert np.abs(res.depth[ys, xs] - expected).max() < 1e-4


def test_faces_behind_the_camera_are_skipped() -> None:
    v, f = quad(-1.0)
    res = rasterize(v, f, np.ones((2, 3)), FOCAL, (SIZE, SIZE))
    assert not res.mask.any()


def test_bad_inputs_name_the_argument() -> None:
    v, f = quad(2.0)
    with pytest.raises(ValueError, match="face_colors"):
        rasterize(v, f, np.ones((3, 3)), FOCAL, (SIZE, SIZE))
    with pytest.raises(ValueError, match="faces"):
        rasterize(v, f + 10, np.ones((2, 3)), FOCAL, (SIZE, SIZE))
    with pytest.raises(ValueError, match="NaN"):
        rasterize(v * np.nan, f, np.ones((2, 3)), FOCAL, (SIZE, SIZE))
    with pytest.raises(ValueError, match="views"):
        render_views(v, f, np.ones((2, 3)), views=("top",))


def test_vertex_normals_of_a_quad() -> None:
    v, f = quad(2.0)
    n = vertex_normals(v, f)
    # Counter-clockwise in x-right/y-down: the cross product points along +z or -z, unit length.
    assert np.allclose(np.abs(n[:, 2]), 1.0)


def test_part_colours_follow_the_dominant_weight() -> None:
    weights = np.zeros((4, 24))
    weights[[0, 1, 2], 5] = 1.0
    weights[3, 7] = 1.0
    faces = np.array([[0, 1, 2], [1, 2, 3]])
    colors = part_face_colors(faces, weights)
    assert np.allclose(colors[0], PART_COLORS[5])
    assert np.allclose(colors[1], PART_COLORS[5])  # two of three vertices are part 5


def test_views_show_an_elongated_mesh_from_two_sides() -> None:
    # A thin slab elongated along x: wide in the front view, narrow in the side view.
    v, f = quad(0.0, half=0.5)
    v = np.concatenate([v, v + np.array([0.0, 0.0, 0.05])])
    v[:, 1] *= 0.2
    f = np.concatenate([f, f + 4])
    img = render_views(v, f, np.full((4, 3), 0.3), size=96, supersample=1)
    assert img.shape == (96, 192, 3)
    front, side = img[:, :96], img[:, 96:]
    width = [int((panel.min(axis=2) < 250).any(axis=0).sum()) for panel in (front, side)]
    assert width[0] > 3 * width[1]


def test_body_renders_fast_and_upright() -> None:
    body = default_body_model()
    pose = torch.zeros(1, 72)
    pose[0, 0] = math.pi  # camera convention: upright is Rx(180°)
    out = body.mesh(pose)
    verts = out.vertices[0].numpy().astype(np.float64) + np.array([0.0, 0.0, 3.0])
    colors = part_face_colors(body.faces, body.skinning_weights.numpy())
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        res = rasterize(verts, body.faces, colors, 1.5 * 256, (256, 256))
        best = min(best, time.perf_counter() - start)
    assert len(body.faces) > 13_000 and body.num_vertices == 6890
    assert best < 0.5, f"rasterising a body at 256 px took {best:.3f}s"
    ys, _ = np.nonzero(res.mask)
    head_row = ys.min()
    # The head (skin colour) is at the top of the silhouette: y down in the camera frame.
    top_colour = res.image[head_row + 3][res.mask[head_row + 3]].mean(axis=0)
    assert top_colour[0] > top_colour[2], "the top of an upright body should be the skin-coloured head"


def test_obj_round_trip(tmp_path) -> None:
    v, f = quad(2.0)
    text = mesh_to_obj(v, f)
    lines = text.splitlines()
    assert sum(line.startswith("v ") for line in lines) == 4
    parsed_f = np.array([[int(x) for x in line.split()[1:]] for line in lines if line.startswith("f ")])
    assert np.array_equal(parsed_f - 1, f)
    path = write_obj(tmp_path / "mesh.obj", v, f)
    parsed_v = np.array(
        [
            [float(x) for x in line.split()[1:]]
            for line in path.read_text().splitlines()
            if line.startswith("v ")
        ]
    )
    assert np.allclose(parsed_v, v, atol=1e-6)


def test_side_by_side_panels_and_titles() -> None:
    a = np.zeros((50, 100, 3), dtype=np.uint8)
    b = np.full((100, 100, 3), 200, dtype=np.uint8)
    out = side_by_side([a, b], ["input", "predicted"], height=80, title_height=24, gap=4)
    assert out.shape == (80 + 24 + 4, 160 + 80 + 3 * 4, 3)
    # Panels placed under the title bar, scaled to the height.
    assert (out[24:104, 4:164] == 0).all()
    assert (out[24:104, 168:248] == 200).all()
    # The titles are drawn: dark pixels in the title bar above each panel.
    assert (out[:24, 4:164].min(axis=2) < 128).any() and (out[:24, 168:248].min(axis=2) < 128).any()
    with pytest.raises(ValueError, match="titles"):
        side_by_side([a], ["x", "y"])
