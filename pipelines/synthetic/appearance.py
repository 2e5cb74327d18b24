"""How rendered people and their surroundings look: outfits, per-part colours, backgrounds, occluders.

Outfits use named colours, so instruction data and ``rpe`` descriptions can
talk about them ("the person in the red shirt"). On single-person images the
left limbs are tinted lighter and the right ones darker, and the back of the
head is hair-coloured, so left/right and front/back stay visible to a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from posegpt.body.skeleton import JOINT_INDEX
from posegpt.render import face_parts

J = JOINT_INDEX

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 35, 40),
    "green": (40, 150, 60),
    "blue": (40, 80, 205),
    "yellow": (235, 205, 40),
    "orange": (240, 130, 30),
    "purple": (125, 55, 165),
    "pink": (240, 125, 175),
    "white": (238, 238, 238),
    "black": (35, 35, 38),
    "grey": (128, 128, 132),
    "brown": (120, 78, 42),
    "cyan": (45, 190, 205),
}
"""Named clothing colours (RGB)."""

SHIRT_COLORS = tuple(COLORS)
TROUSER_COLORS = ("blue", "black", "grey", "brown", "green", "white", "red", "purple")
SKIN_TONES = ((241, 200, 170), (224, 172, 130), (190, 135, 95), (140, 95, 65), (95, 62, 42))
HAIR_COLORS = ((40, 30, 25), (95, 60, 30), (200, 170, 100), (120, 40, 20), (150, 150, 150))

_SHIRT_PARTS = (
    "spine1",
    "spine2",
    "spine3",
    "left_collar",
    "right_collar",
    "left_shoulder",
    "right_shoulder",
)
_SLEEVE_PARTS = ("left_elbow", "right_elbow")
_TROUSER_PARTS = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee")
_SHOE_PARTS = ("left_ankle", "right_ankle", "left_foot", "right_foot")
_SKIN_PARTS = ("neck", "head", "left_wrist", "right_wrist", "left_hand", "right_hand")
_LIMB_PARTS = ("shoulder", "elbow", "wrist", "hand", "hip", "knee", "ankle", "foot")


@dataclass(frozen=True)
class Outfit:
    """What one rendered person wears."""

    shirt: str
    trousers: str
    shoes: str
    long_sleeves: bool
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]

    def describe(self) -> str:
        sleeves = "long-sleeved " if self.long_sleeves else ""
        return f"a {self.shirt} {sleeves}shirt and {self.trousers} trousers"


def random_outfit(rng: np.random.Generator, avoid_shirts: tuple[str, ...] = ()) -> Outfit:
    shirts = [c for c in SHIRT_COLORS if c not in avoid_shirts] or list(SHIRT_COLORS)
    shirt = shirts[int(rng.integers(len(shirts)))]
    trousers_options = [c for c in TROUSER_COLORS if c != shirt]
    trousers = trousers_options[int(rng.integers(len(trousers_options)))]
    return Outfit(
        shirt=shirt,
        trousers=trousers,
        shoes=("black", "brown", "white")[int(rng.integers(3))],
        long_sleeves=bool(rng.random() < 0.5),
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair=HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))],
    )


class BodyPaint:
    """Per-face body parts of one mesh topology, to colour faces from an outfit."""

    def __init__(self, faces: np.ndarray, skin_weights: np.ndarray, rest_vertices: np.ndarray) -> None:
        self.faces = np.asarray(faces, dtype=np.int64)
        self.part = face_parts(self.faces, skin_weights)
        rest = np.asarray(rest_vertices, dtype=np.float64)
        centroid = rest[self.faces].mean(axis=1)
        head = self.part == J["head"]
        head_centre = centroid[head].mean(axis=0) if head.any() else np.zeros(3)
        # Hair: the back and the top of the head (the rest pose faces +z, y up).
        self.hair = head & (
            (centroid[:, 2] < head_centre[2] - 0.01) | (centroid[:, 1] > head_centre[1] + 0.06)
        )

    def face_colors(self, outfit: Outfit, side_tint: float = 0.0) -> np.ndarray:
        """(F, 3) in [0, 1]; ``side_tint`` > 0 lightens the left limbs and darkens the right ones."""
        palette = np.zeros((24, 3))
        for name in _SHIRT_PARTS:
            palette[J[name]] = COLORS[outfit.shirt]
        for name in _SLEEVE_PARTS:
            palette[J[name]] = COLORS[outfit.shirt] if outfit.long_sleeves else outfit.skin
        for name in _TROUSER_PARTS:
            palette[J[name]] = COLORS[outfit.trousers]
        for name in _SHOE_PARTS:
            palette[J[name]] = COLORS[outfit.shoes]
        for name in _SKIN_PARTS:
            palette[J[name]] = outfit.skin
        palette /= 255.0
        if side_tint > 0:
            for limb in _LIMB_PARTS:
                left, right = J[f"left_{limb}"], J[f"right_{limb}"]
                palette[left] = palette[left] + (1.0 - palette[left]) * side_tint
                palette[right] = palette[right] * (1.0 - side_tint)
        colors = palette[self.part]
        colors[self.hair] = np.asarray(outfit.hair) / 255.0
        return colors


BACKGROUND_KINDS = ("gradient", "room", "tiles", "stripes", "clouds")


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A random colour of moderate saturation, so people stand out against it."""
    base = rng.uniform(60, 200, size=3)
    grey = base.mean()
    return grey + (base - grey) * rng.uniform(0.2, 0.7)


def background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A textured (size, size, 3) uint8 background and its kind."""
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b = _muted(rng), _muted(rng)
    if kind == "gradient":
        t = ys[..., None]
        img = a * (1 - t) + b * t
    elif kind == "room":
        horizon = rng.uniform(0.45, 0.7)
        wall = np.broadcast_to(a, (size, size, 3)).copy()
        # Floor boards: stripes that converge towards the horizon.
        depth = np.clip(ys - horizon, 1e-3, None)
        boards = np.sin((xs - 0.5) / depth * rng.uniform(2.0, 5.0) * np.pi) > 0
        floor = np.where(boards[..., None], b, b * 0.8)
        img = np.where((ys > horizon)[..., None], floor, wall)
    elif kind == "tiles":
        n = int(rng.integers(4, 12))
        check = ((xs * n).astype(int) + (ys * n).astype(int)) % 2 == 0
        img = np.where(check[..., None], a, b)
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(4, 14)
        s = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * freq * 2 * np.pi)
        img = a + (b - a) * ((s + 1) / 2)[..., None]
    else:  # clouds: smooth noise, upsampled from a coarse grid
        coarse = rng.uniform(0, 1, size=(6, 6)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))
        img = a + (b - a) * np.clip(smooth, 0, 1)[..., None]
    img = img + rng.normal(0, 4.0, size=(size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8), kind


@dataclass(frozen=True)
class Occluder:
    shape: str
    color: str
    box: tuple[int, int, int, int]

    def describe(self) -> str:
        return f"a {self.color} {self.shape}"


def draw_occluder(
    image: np.ndarray, person_box: tuple[float, float, float, float], rng: np.random.Generator
) -> tuple[np.ndarray, Occluder]:
    """Cover a part (about a fifth to two fifths) of a person's box with a box or a ball."""
    x0, y0, x1, y1 = person_box
    w, h = x1 - x0, y1 - y0
    side = ("left", "right", "bottom", "top")[int(rng.integers(4))]
    frac = rng.uniform(0.2, 0.4)
    if side == "left":
        box = (x0 - 0.1 * w, y0 + rng.uniform(0.1, 0.5) * h, x0 + frac * w, y1 + 0.05 * h)
    elif side == "right":
        box = (x1 - frac * w, y0 + rng.uniform(0.1, 0.5) * h, x1 + 0.1 * w, y1 + 0.05 * h)
    elif side == "bottom":
        box = (x0 + rng.uniform(-0.1, 0.3) * w, y1 - frac * h, x1 - rng.uniform(-0.1, 0.3) * w, y1 + 0.1 * h)
    else:
        box = (x0 + rng.uniform(-0.1, 0.3) * w, y0 - 0.1 * h, x1 - rng.uniform(-0.1, 0.3) * w, y0 + frac * h)
    color = ("grey", "brown", "white", "black", "green", "yellow")[int(rng.integers(6))]
    shape = "box" if rng.random() < 0.7 else "ball"
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    rgb = COLORS[color]
    ibox = tuple(int(np.rint(v)) for v in box)
    if shape == "box":
        draw.rectangle(ibox, fill=rgb, outline=tuple(int(c * 0.6) for c in rgb), width=2)
    else:
        draw.ellipse(ibox, fill=rgb, outline=tuple(int(c * 0.6) for c in rgb), width=2)
    return np.asarray(pil), Occluder(shape, color, ibox)  # type: ignore[arg-type]
