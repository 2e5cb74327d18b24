"""The synthetic world's images in Ultralytics YOLO's dataset format, for training a person detector.

Layout written under ``out``::

    images/{train,val}/<name>.<ext>     copies of the world's images
    labels/{train,val}/<name>.txt       one line per person: ``0 cx cy w h`` (normalised to [0, 1])
    images/train/negative_<i>.png       person-free images (backgrounds, noise) with empty label files
    data.yaml                           path, train, val, names {0: person}

Images come from the world's single-person datasets (SPIN/HMR2-style npz, tight
boxes in their ``bbox`` array) and its multi-person RPE scenes (per-person
``bbox``). The detector trains on the world's ``train`` split and is evaluated
on the others, so no image that evaluates PoseGPT (RPE test scenes) was seen
by the detector either. Person-free training images (the world's own background
textures, and pixel noise at odd sizes and aspect ratios) teach it that texture
alone is not a person: without them it found people in random noise.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pipelines.synthetic.appearance import background
from pipelines.synthetic.scenes import SPIN_PADDING

PERSON_CLASS_ID = 0
"""The only class of datasets written here."""

TRAIN_SPLIT = "train"

NEGATIVE_PREFIX = "negative_"
"""File-name prefix of the person-free training images."""


@dataclass(frozen=True)
class LabeledImage:
    """An image file and the boxes of every person in it (``(N, 4)`` xyxy pixels)."""

    path: Path
    boxes: np.ndarray
    kind: str
    """``single`` (one-person dataset image) or ``scene`` (multi-person RPE scene)."""
    split: str
    """The world's split of the image: ``train``, ``val`` or ``test``."""
    name: str
    """Unique file name in the YOLO dataset (the world path, flattened)."""


@dataclass(frozen=True)
class WorldImages:
    """Every labelled image of a world, and how many were left out and why."""

    items: list[LabeledImage]
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class YoloDataset:
    """A written dataset: its ``data.yaml``, the images of each split, and a digest of labels and pixels."""

    root: Path
    data_yaml: Path
    train: list[LabeledImage]
    val: list[LabeledImage]
    digest: str


def _flat_name(rel: str) -> str:
    path = Path(rel)
    return "__".join(path.with_suffix("").parts) + path.suffix.lower()


def _single_boxes(npz: dict[str, np.ndarray], source: Path) -> np.ndarray | None:
    """Tight boxes of a SPIN/HMR2 npz: its ``bbox`` array, or HMR2's ``[w, h]`` scale, else None."""
    if "bbox" in npz:
        boxes = np.asarray(npz["bbox"], dtype=np.float64)
        if boxes.shape != (len(npz["imgname"]), 4):
            raise ValueError(f"{source}: bbox has shape {boxes.shape}, expected ({len(npz['imgname'])}, 4)")
        return boxes
    scale = np.asarray(npz["scale"], dtype=np.float64)
    if scale.ndim == 2 and scale.shape[1] == 2:
        # HMR2's [w, h] is the padded box; the world pads by SPIN_PADDING.
        half = scale / SPIN_PADDING / 2.0
        center = np.asarray(npz["center"], dtype=np.float64)
        return np.concatenate([center - half, center + half], axis=1)
    return None


def world_labeled_images(world: str | Path) -> WorldImages:
    """The person boxes of every rendered image of a synthetic world (read through ``world.json``)."""
    root = Path(world)
    manifest_path = root / "world.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} does not exist: not a synthetic world (jobs/synth.py writes it)"
        )
    manifest = json.loads(manifest_path.read_text())
    items: list[LabeledImage] = []
    skipped: Counter[str] = Counter()
    for dataset in ("spin", "hmr2"):
        for split, info in sorted(manifest.get(dataset, {}).items()):
            source = root / info["npz"]
            with np.load(source) as f:
                npz = {k: f[k] for k in f.files}
            boxes = _single_boxes(npz, source)
            if boxes is None:
                skipped[f"{dataset}/{split}: no tight box"] += len(npz["imgname"])
                continue
            for rel, box in zip(npz["imgname"], boxes, strict=True):
                rel_path = f"{info['image_root']}/{rel}"
                items.append(LabeledImage(root / rel_path, box[None], "single", split, _flat_name(rel_path)))
    for split, info in sorted(manifest.get("rpe", {}).items()):
        source = root / info["json"]
        scenes: dict[str, list[list[float]]] = {}
        for entry in json.loads(source.read_text()):
            scenes.setdefault(entry["image"], []).append(entry["person"]["bbox"])
        for rel, boxes in scenes.items():
            rel_path = f"{info['image_root']}/{rel}"
            items.append(
                LabeledImage(
                    root / rel_path, np.array(boxes, np.float64), "scene", split, _flat_name(rel_path)
                )
            )
    return WorldImages(items, dict(skipped))


def label_lines(boxes: np.ndarray, width: int, height: int) -> list[str]:
    """YOLO label lines for xyxy pixel boxes, clipped to the image (a person cut by the border keeps the visible part)."""
    lines = []
    for x0, y0, x1, y1 in clip_boxes(boxes, width, height):
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        lines.append(f"{PERSON_CLASS_ID} {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes clipped to the image; those left under a pixel wide or high are dropped."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out[(out[:, 2] - out[:, 0] >= 1) & (out[:, 3] - out[:, 1] >= 1)]


def _rank(name: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{name}".encode()).digest()


def negative_image(index: int, seed: int) -> Image.Image:
    """Person-free image ``index``: a world background or pixel noise, at a size and aspect ratio of its own."""
    rng = np.random.default_rng([seed, index, 0x6E6567])
    width, height = (int(v) for v in rng.integers(96, 640, size=2))
    if index % 2 == 0:
        side = max(width, height)
        pixels, _ = background(rng, side)
        return Image.fromarray(pixels[:height, :width])
    if index % 4 == 1:
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    else:  # noise at a coarser grain, upsampled: blobs rather than single pixels
        grain = int(rng.integers(2, 9))
        coarse = rng.integers(0, 256, size=(height // grain + 1, width // grain + 1, 3), dtype=np.uint8)
        pixels = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.NEAREST))
    return Image.fromarray(pixels)


def write_yolo_dataset(
    images: Iterable[LabeledImage],
    out: str | Path,
    max_train_images: int = 0,
    seed: int = 0,
    negative_fraction: float = 0.0,
) -> YoloDataset:
    """Write ``images`` in YOLO's layout under ``out``: the world's train split for training, the rest held out.

    ``max_train_images`` keeps a seeded, name-hashed subset of the training
    images (0: all). ``negative_fraction`` adds that many person-free training
    images per training image (``negative_image``); the held-out split stays the
    world's. Previous ``images/`` and ``labels/`` under ``out`` are replaced.
    """
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    out = Path(out)
    for sub in ("images", "labels"):
        shutil.rmtree(out / sub, ignore_errors=True)
    items = sorted(images, key=lambda it: it.name)
    names = Counter(it.name for it in items)
    if duplicated := [n for n, c in names.items() if c > 1]:
        raise ValueError(f"detector dataset: image names occur more than once: {duplicated[:5]}")
    train = [it for it in items if it.split == TRAIN_SPLIT]
    if max_train_images and len(train) > max_train_images:
        keep = {it.name for it in sorted(train, key=lambda it: _rank(it.name, seed))[:max_train_images]}
        train = [it for it in train if it.name in keep]
    val = [it for it in items if it.split != TRAIN_SPLIT]
    if not train or not val:
        raise ValueError(
            f"detector dataset: {len(train)} training and {len(val)} held-out images; both need at least one"
        )
    digest = hashlib.sha256()
    for i in range(round(negative_fraction * len(train))):
        name = f"{NEGATIVE_PREFIX}{i:05d}.png"
        path = out / "images" / "train" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        negative_image(i, seed).save(path)
        (out / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (out / "labels" / "train" / f"{NEGATIVE_PREFIX}{i:05d}.txt").write_bytes(b"")
        digest.update(f"train/{name}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for split, members in (("train", train), ("val", val)):
        for item in members:
            data = item.path.read_bytes()
            with Image.open(item.path) as im:
                width, height = im.size
            lines = label_lines(item.boxes, width, height)
            label = ("\n".join(lines) + "\n") if lines else ""
            for sub, payload in (("images", data), ("labels", label.encode())):
                name = item.name if sub == "images" else Path(item.name).with_suffix(".txt").name
                target = out / sub / split / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(payload)
            digest.update(f"{split}/{item.name}\n{label}".encode())
            digest.update(hashlib.sha256(data).digest())
    data_yaml = out / "data.yaml"
    spec = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": {0: "person"}}
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return YoloDataset(out, data_yaml, train, val, digest.hexdigest()[:16])


def read_label_file(path: str | Path, width: int, height: int) -> np.ndarray:
    """Boxes (xyxy pixels) of a YOLO label file: the inverse of ``label_lines``."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    boxes = []
    for i, row in enumerate(rows):
        if len(row) != 5:
            raise ValueError(f"{path}: line {i + 1} has {len(row)} fields, expected 5")
        _, cx, cy, w, h = (float(v) for v in row)
        boxes.append(
            [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        )
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def gt_boxes(items: Sequence[LabeledImage]) -> list[np.ndarray]:
    """Ground-truth boxes of each image, clipped to the image as in its label file."""
    out = []
    for item in items:
        with Image.open(item.path) as im:
            out.append(clip_boxes(item.boxes, *im.size))
    return out
