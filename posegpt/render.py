"""Mesh rendering without OpenGL: a numpy z-buffer rasteriser, body views, OBJ and report panels.

Frames: everything here is in the camera frame of DESIGN.md (x right, y down,
z forward). A body posed with a camera-convention root (upright ≈ ``Rx(180°)``)
comes out of the body model standing upright and facing the camera, so its
"front" view is the mesh as given.

* ``rasterize``: perspective z-buffer rasterisation of a triangle mesh with
  per-face colours and Lambert shading on interpolated vertex normals. It can
  draw into an existing image and depth buffer, so several meshes (people in one
  scene) composite correctly. Vectorised over the pixels of every face's bounding
  box, so a 13,776-face body at 256 px takes a few tens of milliseconds.
* ``render_views``: front and side views of a body, fitted to the panel.
* ``mesh_to_obj`` / ``write_obj``: Wavefront OBJ text.
* ``side_by_side``: panels (input image, predicted body, ground truth) in a row
  with a title over each, for reports.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from posegpt.body.skeleton import JOINT_NAMES

# Candidate (face, pixel) pairs handled at once; bounds memory when faces are large.
_MAX_CANDIDATES = 2_000_000
_NEAR = 1e-3


def _part_palette() -> np.ndarray:
    """Per-joint RGB in [0, 1]: left limbs blue, right limbs orange, torso grey, head skin.

    Left and right differ in hue so that a viewer (and a model) can tell them apart.
    """
    colors = {
        "pelvis": (0.55, 0.55, 0.60),
        "spine1": (0.60, 0.60, 0.64),
        "spine2": (0.64, 0.64, 0.68),
        "spine3": (0.68, 0.68, 0.72),
        "neck": (0.90, 0.75, 0.62),
        "head": (0.93, 0.78, 0.65),
        "left_hip": (0.20, 0.35, 0.80),
        "left_knee": (0.25, 0.45, 0.90),
        "left_ankle": (0.15, 0.25, 0.60),
        "left_foot": (0.10, 0.18, 0.45),
        "right_hip": (0.85, 0.40, 0.15),
        "right_knee": (0.95, 0.55, 0.20),
        "right_ankle": (0.65, 0.30, 0.10),
        "right_foot": (0.50, 0.22, 0.08),
        "left_collar": (0.45, 0.65, 0.95),
        "left_shoulder": (0.35, 0.60, 0.95),
        "left_elbow": (0.45, 0.75, 1.00),
        "left_wrist": (0.55, 0.85, 1.00),
        "left_hand": (0.60, 0.90, 1.00),
        "right_collar": (0.95, 0.70, 0.40),
        "right_shoulder": (0.95, 0.65, 0.30),
        "right_elbow": (1.00, 0.75, 0.40),
        "right_wrist": (1.00, 0.85, 0.50),
        "right_hand": (1.00, 0.90, 0.60),
    }
    return np.array([colors[name] for name in JOINT_NAMES], dtype=np.float32)


PART_COLORS: np.ndarray = _part_palette()
"""(24, 3) RGB in [0, 1], one per SMPL joint (the body part it skins)."""

DEFAULT_LIGHT = (-0.35, -0.55, -0.75)
"""Direction from the surface towards the light, camera frame: up-left, towards the camera."""


@dataclass
class RenderResult:
    """A rendered frame: colour, depth (``inf`` where empty) and the coverage mask."""

    image: np.ndarray
    """(H, W, 3) uint8."""
    depth: np.ndarray
    """(H, W) float32 camera-space z of the visible surface, ``inf`` for background."""
    mask: np.ndarray
    """(H, W) bool, True where a face of any mesh drawn into this frame is visible."""


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer array of shape (F, 3), got {f.shape} {f.dtype}")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain NaN or inf")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices outside [0, {len(v)})")
    return v, f.astype(np.int64)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit normals: area-weighted sums of the adjacent faces' normals."""
    v, f = _check_mesh(vertices, faces)
    tri = v[f]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    normals = np.zeros_like(v)
    for c in range(3):
        normals[:, c] = sum(np.bincount(f[:, k], weights=face_n[:, c], minlength=len(v)) for k in range(3))
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(norm, 1e-12)


def face_parts(faces: np.ndarray, skin_weights: np.ndarray) -> np.ndarray:
    """(F,) the body part of each face: the joint with the largest summed skinning weight."""
    w = np.asarray(skin_weights)
    if w.ndim != 2:
        raise ValueError(f"skin_weights must have shape (V, J), got {w.shape}")
    return w[np.asarray(faces)].sum(axis=1).argmax(axis=1)


def part_face_colors(
    faces: np.ndarray, skin_weights: np.ndarray, palette: np.ndarray | None = None
) -> np.ndarray:
    """(F, 3) face colours in [0, 1] from the body part of each face and a (J, 3) palette."""
    pal = PART_COLORS if palette is None else np.asarray(palette, dtype=np.float32)
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.shape[0] < np.asarray(skin_weights).shape[1]:
        raise ValueError(
            f"palette must have shape (J>={np.asarray(skin_weights).shape[1]}, 3), got {pal.shape}"
        )
    return pal[face_parts(faces, skin_weights)]


def _background(bg: np.ndarray | Sequence[float] | None, height: int, width: int) -> np.ndarray:
    if bg is None:
        return np.full((height, width, 3), 255, dtype=np.uint8)
    arr = np.asarray(bg)
    if arr.ndim == 1:
        if arr.shape[0] != 3:
            raise ValueError(f"background colour must have 3 values, got {arr.shape}")
        return np.broadcast_to(arr.astype(np.uint8), (height, width, 3)).copy()
    if arr.shape != (height, width, 3):
        raise ValueError(f"background image must have shape {(height, width, 3)}, got {arr.shape}")
    return arr.astype(np.uint8, copy=True)


def rasterize(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_colors: np.ndarray,
    focal: float,
    size: tuple[int, int],
    center: tuple[float, float] | None = None,
    background: np.ndarray | Sequence[float] | None = None,
    depth: np.ndarray | None = None,
    light_dir: Sequence[float] = DEFAULT_LIGHT,
    ambient: float = 0.38,
    diffuse: float = 0.62,
) -> RenderResult:
    """Render a triangle mesh with a pinhole camera at the origin looking along +z.

    ``vertices`` (V, 3) in the camera frame (x right, y down, z forward), metres;
    ``faces`` (F, 3) vertex indices; ``face_colors`` (F, 3) in [0, 1] (or uint8);
    ``focal`` in pixels; ``size`` = (height, width); ``center`` the principal point
    (default: the image centre). Pixel (row i, column j) samples the point
    (j + 0.5, i + 0.5). ``background`` is an RGB colour, an (H, W, 3) uint8 image or
    None (white). Pass the ``depth`` of an earlier result (and its image as
    ``background``) to composite several meshes with correct occlusion. Faces with
    a vertex closer than 1 mm to the camera plane are skipped (no clipping).
    Lighting is two-sided Lambert, so open meshes look right from behind too.
    """
    v, f = _check_mesh(vertices, faces)
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (height, width), got {size}")
    colors = np.asarray(face_colors, dtype=np.float32)
    if colors.shape != (len(f), 3):
        raise ValueError(f"face_colors must have shape ({len(f)}, 3), got {colors.shape}")
    if colors.size and colors.max() > 1.0:
        colors = colors / 255.0
    cx, cy = (width / 2.0, height / 2.0) if center is None else (float(center[0]), float(center[1]))
    image = _background(background, height, width)
    zbuf = (
        np.full((height, width), np.inf, dtype=np.float32) if depth is None else np.array(depth, np.float32)
    )
    if zbuf.shape != (height, width):
        raise ValueError(f"depth must have shape {(height, width)}, got {zbuf.shape}")
    mask = np.zeros((height, width), dtype=bool)
    if len(f) == 0:
        return RenderResult(image, zbuf, mask)

    light = np.asarray(light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    normals = vertex_normals(v, f)

    z = v[:, 2]
    safe_z = np.where(z > _NEAR, z, 1.0)
    sx = focal * v[:, 0] / safe_z + cx
    sy = focal * v[:, 1] / safe_z + cy
    keep = (z[f] > _NEAR).all(axis=1)
    tx, ty = sx[f], sy[f]  # (F, 3)
    # Pixel centres inside each face's bounding box: j + 0.5 in [min x, max x].
    x0 = np.maximum(np.ceil(tx.min(axis=1) - 0.5), 0)
    x1 = np.minimum(np.floor(tx.max(axis=1) - 0.5), width - 1)
    y0 = np.maximum(np.ceil(ty.min(axis=1) - 0.5), 0)
    y1 = np.minimum(np.floor(ty.max(axis=1) - 0.5), height - 1)
    bw = np.where(keep, x1 - x0 + 1, 0).clip(min=0).astype(np.int64)
    bh = np.where(keep, y1 - y0 + 1, 0).clip(min=0).astype(np.int64)
    # Edge functions l_k(p) = a_k x + b_k y + c_k, the barycentric weight of vertex k.
    area = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (ty[:, 1] - ty[:, 0])
    count = bw * bh * (np.abs(area) > 1e-12)
    faces_live = np.nonzero(count)[0]
    if faces_live.size == 0:
        return RenderResult(image, zbuf, mask)
    inv_area = 1.0 / area[faces_live]
    # coef[c][:, k]: coefficient c (of x, y, 1) of vertex k's barycentric weight; float32 halves the traffic.
    coef = np.empty((3, faces_live.size, 3), dtype=np.float32)
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        xi, yi = tx[faces_live, i], ty[faces_live, i]
        xj, yj = tx[faces_live, j], ty[faces_live, j]
        coef[0, :, k] = (yi - yj) * inv_area
        coef[1, :, k] = (xj - xi) * inv_area
        coef[2, :, k] = (xi * yj - xj * yi) * inv_area
    inv_z = (1.0 / safe_z[f[faces_live]]).astype(np.float32)  # (L, 3), linear in screen space
    x0l, y0l, bwl = x0[faces_live].astype(np.int64), y0[faces_live].astype(np.int64), bw[faces_live]

    best_inv = np.where(np.isfinite(zbuf), 1.0 / np.maximum(zbuf, _NEAR), 0.0).astype(np.float32).ravel()
    best_face = np.full(height * width, -1, dtype=np.int64)
    best_bary = np.zeros((height * width, 3), dtype=np.float32)
    counts = count[faces_live]
    # Chunks of faces whose candidate pixels fit the memory bound (at least one face each).
    cum = np.cumsum(counts)
    start = 0
    while start < faces_live.size:
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + _MAX_CANDIDATES, side="right")), start + 1)
        n = counts[start:stop]
        owner = np.repeat(np.arange(start, stop), n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        fw = bwl[owner]
        ix = x0l[owner] + local % fw
        iy = y0l[owner] + local // fw
        px = ix.astype(np.float32) + 0.5
        py = iy.astype(np.float32) + 0.5
        bary = coef[0][owner] * px[:, None] + coef[1][owner] * py[:, None] + coef[2][owner]
        inside = (bary >= -1e-6).all(axis=1)
        owner, bary = owner[inside], bary[inside]
        pix = iy[inside] * width + ix[inside]
        cand_inv = (bary * inv_z[owner]).sum(axis=1)
        # Nearest candidate per pixel: the largest 1/z wins; ties keep the last one written.
        np.maximum.at(best_inv, pix, cand_inv)
        win = cand_inv >= best_inv[pix]
        best_face[pix[win]] = owner[win]
        best_bary[pix[win]] = bary[win]
        start = stop

    hit = np.nonzero(best_face >= 0)[0]
    if hit.size == 0:
        return RenderResult(image, zbuf, mask)
    lf = best_face[hit]
    face_ids = faces_live[lf]
    bary = best_bary[hit]
    # Perspective-correct weights for the normal interpolation.
    pw = (bary * inv_z[lf]).astype(np.float64)
    pw /= pw.sum(axis=1, keepdims=True)
    n = (normals[f[face_ids]] * pw[:, :, None]).sum(axis=1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    # Two-sided: flip normals that face away from the viewer (the ray to the pixel).
    ray = np.stack(
        [(hit % width + 0.5 - cx) / focal, (hit // width + 0.5 - cy) / focal, np.ones(hit.size)], axis=1
    )
    n = np.where(((n * ray).sum(axis=1) > 0)[:, None], -n, n)
    shade = ambient + diffuse * np.clip(n @ light, 0.0, 1.0)
    rgb = np.clip(colors[face_ids] * shade[:, None].astype(np.float32), 0.0, 1.0)
    flat = image.reshape(-1, 3)
    flat[hit] = np.round(rgb * 255.0).astype(np.uint8)
    zflat = zbuf.reshape(-1)
    zflat[hit] = 1.0 / best_inv[hit]
    mask.reshape(-1)[hit] = True
    return RenderResult(image, zbuf, mask)


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


VIEW_ANGLES = {"front": 0.0, "side": -math.pi / 2, "back": math.pi, "other_side": math.pi / 2}
"""Rotation (radians) about the camera's vertical axis applied to the body for each view."""


def render_views(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_colors: np.ndarray,
    size: int = 256,
    views: Sequence[str] = ("front", "side"),
    background: Sequence[int] = (255, 255, 255),
    supersample: int = 2,
) -> np.ndarray:
    """Views of one mesh side by side: (size, size * len(views), 3) uint8.

    The mesh is centred on its bounding box and turned about the vertical (y) axis
    for each view ("side" shows the body's left side when it faces the camera).
    Every view uses the same camera distance, so the panels share one scale.
    ``supersample`` renders at that many times the size and averages down, to
    smooth the edges.
    """
    v, f = _check_mesh(vertices, faces)
    unknown = [name for name in views if name not in VIEW_ANGLES]
    if unknown:
        raise ValueError(f"unknown views {unknown}; known: {sorted(VIEW_ANGLES)}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    mid = (v.min(axis=0) + v.max(axis=0)) / 2.0
    centred = v - mid
    radius = float(np.linalg.norm(centred, axis=1).max()) or 1.0
    big = size * supersample
    focal = 2.5 * big
    # Distance at which the bounding sphere fills 90% of the panel.
    distance = radius * focal / (0.45 * big) + radius
    panels = []
    for name in views:
        rotated = centred @ _rot_y(VIEW_ANGLES[name]).T
        rotated[:, 2] += distance
        res = rasterize(rotated, f, face_colors, focal, (big, big), background=background)
        img = res.image
        if supersample > 1:
            img = (
                img.reshape(size, supersample, size, supersample, 3)
                .mean(axis=(1, 3))
                .round()
                .astype(np.uint8)
            )
        panels.append(img)
    return np.concatenate(panels, axis=1)


def mesh_to_obj(vertices: np.ndarray, faces: np.ndarray) -> str:
    """Wavefront OBJ text (1-based face indices)."""
    v, f = _check_mesh(vertices, faces)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    return "\n".join(lines) + "\n"


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(mesh_to_obj(vertices, faces))
    return out


def save_png(path: str | Path, image: np.ndarray) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(out, format="PNG")
    return out


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _as_pil(panel: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(panel, Image.Image):
        return panel.convert("RGB")
    arr = np.asarray(panel)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"a panel must be an (H, W, 3) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[:, :, :3])


def side_by_side(
    panels: Sequence[np.ndarray | Image.Image],
    titles: Sequence[str],
    height: int = 256,
    title_height: int = 28,
    gap: int = 8,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Panels scaled to one height, in a row, each under its title: (H, W, 3) uint8.

    For reports: e.g. ``[input image, predicted body views, ground-truth views]``
    with ``["input", "predicted", "ground truth"]``.
    """
    if len(panels) == 0:
        raise ValueError("side_by_side needs at least one panel")
    if len(titles) != len(panels):
        raise ValueError(f"got {len(panels)} panels but {len(titles)} titles")
    scaled = []
    for panel in panels:
        img = _as_pil(panel)
        w = max(1, round(img.width * height / img.height))
        scaled.append(img.resize((w, height), Image.Resampling.BILINEAR))
    total_w = sum(img.width for img in scaled) + gap * (len(scaled) + 1)
    canvas = Image.new("RGB", (total_w, height + title_height + gap), background)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, title_height - 10))
    x = gap
    for img, title in zip(scaled, titles, strict=True):
        left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
        tx = x + (img.width - (right - left)) / 2
        ty = (title_height - (bottom - top)) / 2 - top
        draw.text((tx, ty), title, fill=(20, 20, 20), font=font)
        canvas.paste(img, (x, title_height))
        x += img.width + gap
    return np.asarray(canvas)


__all__ = [
    "DEFAULT_LIGHT",
    "PART_COLORS",
    "VIEW_ANGLES",
    "RenderResult",
    "encode_png",
    "face_parts",
    "mesh_to_obj",
    "part_face_colors",
    "rasterize",
    "render_views",
    "save_png",
    "side_by_side",
    "vertex_normals",
    "write_obj",
]
