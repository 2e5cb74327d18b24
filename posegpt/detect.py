"""Person detection with Ultralytics YOLO: boxes, crops, box metrics, and training a small detector.

The model answers best on tight person crops (it is trained on them), so whole
photos go through a detector first: ``PersonDetector`` returns the person boxes
of a batch of images, and ``detect_and_crop`` turns them into crops with
``posegpt.data.crops.crop_box``, the function the prepare job uses, so that training
and inference see the same kind of input.

Ultralytics is kept offline and inside the project: its settings file lives in
``YOLO_CONFIG_DIR`` (set by ``posegpt.runtime.setup_environment``), its own
MLflow/Ray Tune/telemetry callbacks are switched off (jobs log to MLflow
through ``posegpt.tracking``), and a weights path that does not exist is an
error here rather than a download attempt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from posegpt.config import to_dict
from posegpt.data.crops import crop_box
from posegpt.tracking import TrackingConfig

PERSON = "person"
"""Class name of people in COCO-trained YOLO models and in detectors trained here."""

ImageLike = np.ndarray | Image.Image
"""An RGB image: ``(H, W, 3)`` uint8 array (grey ``(H, W)`` and RGBA are converted) or a PIL image."""


class DetectorError(ValueError):
    """A weights file or an input image the detector cannot use."""


@dataclass
class DetectorConfig:
    """Person detector used to find people in whole images (prepare, serving, evaluation)."""

    weights: str = ""
    """Path to an Ultralytics YOLO detection checkpoint (``.pt``): ``yolov8n.pt``, ``yolo11n.pt`` or one written by ``jobs/train_detector.py``. Never downloaded."""
    min_score: float = 0.25
    """Boxes with a lower confidence are dropped."""
    min_box_size_px: float = 16.0
    """Boxes whose longer side is shorter than this many pixels (in the input image) are dropped."""
    image_size: int = 640
    """Side in pixels the detector resizes (letterboxes) images to; use the size the model was trained at."""
    device: str = "cpu"
    """Torch device for detection: ``cpu``, ``cuda`` or ``cuda:N``."""
    batch_size: int = 8
    """Images per forward pass when detecting over many images."""
    padding: float = 1.2
    """Crop side = padding × the box's longer side. Detectors give tight boxes; SPIN-style datasets store boxes 1.2 × tight, so 1.2 makes detected crops like the prepare job's."""
    iou_threshold: float = 0.6
    """IoU above which non-maximum suppression merges two boxes of one person."""
    max_people: int = 20
    """At most this many people per image (highest scores first)."""
    person_class: str = PERSON
    """Name of the person class in the model's class names."""

    def validate(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise DetectorError(f"detector.min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise DetectorError(f"detector.iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.min_box_size_px < 0:
            raise DetectorError(f"detector.min_box_size_px must be >= 0, got {self.min_box_size_px}")
        if self.image_size < 32 or self.image_size % 32:
            raise DetectorError(
                f"detector.image_size must be a multiple of 32 (YOLO's stride), got {self.image_size}"
            )
        if self.batch_size < 1 or self.max_people < 1:
            raise DetectorError("detector.batch_size and detector.max_people must be >= 1")
        if self.padding <= 0:
            raise DetectorError(f"detector.padding must be > 0, got {self.padding}")


@dataclass(frozen=True)
class PersonBox:
    """One detected person: corners in input-image pixels and the detector's confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def size(self) -> float:
        """The longer side: crops are squares of ``padding × size``."""
        return max(self.width, self.height)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: for shard ``meta`` and service responses."""
        return {"xyxy": [round(float(v), 2) for v in self.xyxy], "score": round(float(self.score), 4)}


@dataclass(frozen=True)
class PersonCrop:
    """A detected person and its square crop (RGB uint8, ``out_size × out_size``)."""

    box: PersonBox
    image: np.ndarray
    padding: float


def configure_ultralytics() -> Path:
    """Keep Ultralytics' folders inside its config folder and switch off its integrations and telemetry.

    The settings file lives in ``YOLO_CONFIG_DIR`` (inside the project cache once
    ``setup_environment`` ran); runs, weights and datasets folders are put next to it
    so nothing is written to the repository or the home folder. Ultralytics' MLflow
    callback would open runs of its own in whatever tracking store the environment
    names, so jobs log through ``posegpt.tracking`` instead. Returns the config folder.
    """
    from ultralytics import settings
    from ultralytics.utils import USER_CONFIG_DIR

    root = Path(USER_CONFIG_DIR)
    wanted: dict[str, Any] = {
        key: False
        for key in (
            "sync",
            "mlflow",
            "raytune",
            "clearml",
            "comet",
            "dvc",
            "tensorboard",
            "wandb",
            "vscode_msg",
        )
    }
    wanted.update(
        datasets_dir=str(root / "datasets"),
        weights_dir=str(root / "weights"),
        runs_dir=str(root / "runs"),
    )
    if any(settings.get(k) != v for k, v in wanted.items()):
        settings.update(wanted)
    # Dataset checks look for Arial.ttf (label plots) and fetch it from GitHub when missing; a local
    # font under that name keeps training offline. Matplotlib ships DejaVu Sans.
    font = root / "Arial.ttf"
    if not font.exists():
        from matplotlib import font_manager

        shutil.copyfile(font_manager.findfont("DejaVu Sans"), font)
    return root


def _as_rgb(image: ImageLike, index: int) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise DetectorError(f"image {index}: expected a numpy array or PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise DetectorError(f"image {index}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise DetectorError(f"image {index}: expected shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")


class PersonDetector:
    """An Ultralytics YOLO detection model that returns person boxes only.

    Thread-safe (one lock around the model): a Serve replica may call it from
    several request threads.
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        path = Path(cfg.weights).expanduser()
        if not cfg.weights:
            raise DetectorError("detector.weights is empty: give the path of a YOLO .pt checkpoint")
        if not path.is_file():
            # Checked here: Ultralytics would try to download a missing file by its name.
            raise DetectorError(f"detector weights {path} do not exist")
        if path.suffix.lower() != ".pt":
            raise DetectorError(f"detector weights {path}: expected an Ultralytics .pt checkpoint")
        configure_ultralytics()
        from ultralytics import YOLO

        try:
            model = YOLO(str(path))
        except Exception as exc:  # any failure to unpickle means "not a YOLO checkpoint"
            raise DetectorError(
                f"detector weights {path} are not an Ultralytics YOLO checkpoint: {exc}"
            ) from exc
        if model.task != "detect":
            raise DetectorError(
                f"detector weights {path} hold a YOLO {model.task!r} model, not a detection model"
            )
        names: dict[int, str] = dict(model.names)
        ids = [i for i, name in names.items() if name == cfg.person_class]
        if not ids:
            raise DetectorError(
                f"detector weights {path} have no class named {cfg.person_class!r}; classes: {sorted(names.values())[:20]}"
            )
        self.model = model
        self.person_class_id = ids[0]
        self.weights = path
        self._lock = threading.Lock()

    def detect(self, images: Sequence[ImageLike]) -> list[list[PersonBox]]:
        """Person boxes for each image, highest score first; ``[]`` for an image without people."""
        arrays = [_as_rgb(image, i) for i, image in enumerate(images)]
        out: list[list[PersonBox]] = []
        for start in range(0, len(arrays), self.cfg.batch_size):
            chunk = arrays[start : start + self.cfg.batch_size]
            # Ultralytics reads numpy images as OpenCV BGR.
            bgr = [np.ascontiguousarray(a[:, :, ::-1]) for a in chunk]
            with self._lock:
                results = self.model.predict(
                    bgr,
                    imgsz=self.cfg.image_size,
                    conf=self.cfg.min_score,
                    iou=self.cfg.iou_threshold,
                    classes=[self.person_class_id],
                    max_det=self.cfg.max_people,
                    device=self.cfg.device,
                    half=self.cfg.device.startswith("cuda"),
                    verbose=False,
                    save=False,
                )
            for result, array in zip(results, chunk, strict=True):
                out.append(self._boxes(result, array.shape[1], array.shape[0]))
        return out

    def detect_one(self, image: ImageLike) -> list[PersonBox]:
        return self.detect([image])[0]

    def _boxes(self, result: Any, width: int, height: int) -> list[PersonBox]:
        xyxy = result.boxes.xyxy.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
        scores = result.boxes.conf.detach().cpu().numpy().astype(np.float64).reshape(-1)
        boxes = []
        for (x0, y0, x1, y1), score in zip(xyxy, scores, strict=True):
            x0, x1 = float(np.clip(x0, 0, width)), float(np.clip(x1, 0, width))
            y0, y1 = float(np.clip(y0, 0, height)), float(np.clip(y1, 0, height))
            if max(x1 - x0, y1 - y0) < self.cfg.min_box_size_px or score < self.cfg.min_score:
                continue
            boxes.append(PersonBox(x0, y0, x1, y1, float(score)))
        return sorted(boxes, key=lambda b: -b.score)


def crops_for_boxes(
    image: ImageLike, boxes: Sequence[PersonBox], out_size: int, padding: float
) -> list[PersonCrop]:
    """Square crops around ``boxes`` (side ``padding × box.size``), out-of-image areas filled."""
    rgb = _as_rgb(image, 0)
    return [
        PersonCrop(
            box=box, image=np.asarray(crop_box(rgb, box.center, box.size, padding, out_size)), padding=padding
        )
        for box in boxes
    ]


def detect_and_crop(
    image: ImageLike, detector: PersonDetector, out_size: int, padding: float | None = None
) -> list[PersonCrop]:
    """Detect the people in one whole image and crop each (padding from the detector config by default)."""
    boxes = detector.detect_one(image)
    return crops_for_boxes(image, boxes, out_size, detector.cfg.padding if padding is None else padding)


def match_box(
    boxes: Sequence[PersonBox], target_xyxy: Sequence[float], min_iou: float = 0.3
) -> PersonBox | None:
    """The box overlapping ``target_xyxy`` most (IoU at least ``min_iou``), or None."""
    if not boxes:
        return None
    ious = box_iou(np.array([b.xyxy for b in boxes]), np.asarray(target_xyxy, dtype=np.float64)[None])[:, 0]
    best = int(np.argmax(ious))
    return boxes[best] if ious[best] >= min_iou else None


def detect_person_crop(
    image: ImageLike,
    detector: PersonDetector,
    target_xyxy: Sequence[float],
    out_size: int,
    padding: float | None = None,
    min_iou: float = 0.3,
) -> PersonCrop | None:
    """The detected crop of one known person (e.g. the person an RPE description names, by its box).

    Detects everyone in the whole image, keeps the detection that overlaps
    ``target_xyxy`` most, and crops around the *detected* box, so the crop is what
    the service would see. None when no detection overlaps the target by ``min_iou``.
    """
    box = match_box(detector.detect_one(image), target_xyxy, min_iou)
    if box is None:
        return None
    return crops_for_boxes(image, [box], out_size, detector.cfg.padding if padding is None else padding)[0]


# --- box metrics -------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between ``(N, 4)`` and ``(M, 4)`` xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(
    predictions: Sequence[Sequence[PersonBox]],
    ground_truth: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
) -> float:
    """Single-class AP at an IoU threshold over a set of images (VOC 2010+ all-point interpolation).

    Predictions of all images are ranked by score; each is a true positive when it
    overlaps a not-yet-matched ground-truth box of its image by at least
    ``iou_threshold`` (greedy, highest score first). AP is the area under the
    precision envelope over recall. With one class (person) this is the mAP.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction lists for {len(ground_truth)} images")
    total_gt = sum(len(np.asarray(g).reshape(-1, 4)) for g in ground_truth)
    if total_gt == 0:
        raise ValueError("average precision needs at least one ground-truth box")
    ranked = sorted(
        ((box.score, i, box) for i, boxes in enumerate(predictions) for box in boxes), key=lambda t: -t[0]
    )
    matched = [np.zeros(len(np.asarray(g).reshape(-1, 4)), dtype=bool) for g in ground_truth]
    tp = np.zeros(len(ranked))
    for k, (_, i, box) in enumerate(ranked):
        gt = np.asarray(ground_truth[i], dtype=np.float64).reshape(-1, 4)
        if len(gt) == 0:
            continue
        ious = box_iou(np.array([box.xyxy]), gt)[0]
        ious[matched[i]] = -1.0
        j = int(np.argmax(ious))
        if ious[j] >= iou_threshold:
            matched[i][j] = True
            tp[k] = 1.0
    if len(ranked) == 0:
        return 0.0
    cum_tp = np.cumsum(tp)
    recall = cum_tp / total_gt
    precision = cum_tp / np.arange(1, len(ranked) + 1)
    # Precision envelope: the best precision at this recall or any higher one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(recall_steps * envelope))


# --- training a small detector -----------------------------------------------------------------


@dataclass
class DetectorTrainConfig:
    """Train a small YOLO person detector from scratch on the synthetic world (``jobs/train_detector.py``)."""

    architecture: str = "yolov8"
    """Ultralytics model family whose layer layout is used: ``yolov8`` or ``yolo11`` (built from its YAML, no pretrained weights)."""
    depth_multiple: float = 0.33
    """Scales the number of repeated blocks (YOLOv8n: 0.33)."""
    width_multiple: float = 0.125
    """Scales the channel counts (YOLOv8n: 0.25); the synthetic world needs far less than COCO."""
    image_size: int = 128
    """Training and inference image side in pixels (a multiple of 32)."""
    epochs: int = 20
    """Passes over the training images."""
    batch_size: int = 8
    """Images per optimiser step; small batches give more steps in a short CPU budget."""
    optimizer: str = "AdamW"
    """Ultralytics optimiser name (``SGD``, ``Adam``, ``AdamW``, ``auto``)."""
    lr0: float = 0.003
    """Initial learning rate (cosine-free linear decay to lr0 × 0.01, Ultralytics' default schedule)."""
    warmup_epochs: float = 0.3
    """Learning-rate warm-up length in epochs (Ultralytics' default of 3 eats most of a short run)."""
    mosaic: float = 0.0
    """Probability of mosaic augmentation; off by default, it slows convergence of short runs on large people."""
    scale: float = 0.2
    """Random rescale augmentation gain (± fraction)."""
    translate: float = 0.05
    """Random translation augmentation (fraction of the image side)."""
    fliplr: float = 0.5
    """Probability of a horizontal flip."""
    hsv: bool = False
    """Colour (HSV) augmentation; the synthetic world's colours are informative, so off by default."""
    workers: int = 0
    """Data loader worker processes (0: load in the training process; best on 2 cores)."""
    threads: int = 2
    """Torch CPU threads for training."""
    device: str = "cpu"
    """Torch device for training: ``cpu``, ``cuda`` or ``cuda:N``."""
    seed: int = 0
    """Seed for the train/held-out split and Ultralytics' training."""
    max_images: int = 0
    """Train on at most this many of the world's training images, a seeded subset (0: all); val and test images are held out."""
    negative_fraction: float = 0.25
    """Person-free training images (world backgrounds, pixel noise) added per training image; without them the detector saw people in random noise."""
    reuse: bool = True
    """Reuse weights already trained with the same config and data (a folder keyed by their hash)."""
    eval_min_score: float = 0.01
    """Score threshold for the held-out mAP (low, so the precision-recall curve is complete)."""
    padding: float = 1.2
    """Crop padding of the trained detector's inference config: its boxes are tight, and the world's SPIN/HMR2 boxes are 1.2 × tight, so 1.2 gives crops like the prepare job's."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking of the training run."""

    def validate(self) -> None:
        if self.architecture not in _ARCHITECTURES:
            raise DetectorError(
                f"architecture must be one of {sorted(_ARCHITECTURES)}, got {self.architecture!r}"
            )
        if self.image_size < 32 or self.image_size % 32:
            raise DetectorError(f"image_size must be a multiple of 32, got {self.image_size}")
        if self.epochs < 1 or self.batch_size < 1:
            raise DetectorError("epochs and batch_size must be >= 1")


_ARCHITECTURES = {"yolov8": "v8/yolov8.yaml", "yolo11": "11/yolo11.yaml"}

# Fields that do not change the trained weights: left out of the cache key.
_KEY_EXCLUDED = {"reuse", "eval_min_score", "padding", "tracking", "workers", "threads", "device"}


@dataclass(frozen=True)
class TrainedDetector:
    """Weights written by ``train_yolo`` and what it took."""

    weights: Path
    run_dir: Path
    key: str
    train_seconds: float
    reused: bool


def training_key(cfg: DetectorTrainConfig, data_digest: str) -> str:
    """Hash of the settings that shape the weights plus the training data's digest."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _KEY_EXCLUDED}
    text = json.dumps({"settings": settings, "data": data_digest}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_model_yaml(cfg: DetectorTrainConfig, path: Path) -> Path:
    """The architecture's Ultralytics YAML with one class and this config's depth/width multiples."""
    import yaml
    from ultralytics.utils import ROOT

    spec = yaml.safe_load((Path(ROOT) / "cfg" / "models" / _ARCHITECTURES[cfg.architecture]).read_text())
    spec.pop("scales", None)
    spec.update(nc=1, depth_multiple=cfg.depth_multiple, width_multiple=cfg.width_multiple)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def train_yolo(cfg: DetectorTrainConfig, data_yaml: Path, data_digest: str, out_dir: Path) -> TrainedDetector:
    """Train (or reuse) a person detector on a YOLO-format dataset; weights at ``<out>/<key>/detector.pt``."""
    cfg.validate()
    key = training_key(cfg, data_digest)
    run_dir = Path(out_dir).resolve() / key
    weights = run_dir / "detector.pt"
    info = run_dir / "training.json"
    if cfg.reuse and weights.is_file() and info.is_file():
        seconds = float(json.loads(info.read_text())["train_seconds"])
        return TrainedDetector(weights, run_dir, key, seconds, reused=True)
    configure_ultralytics()
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(cfg.threads)
    model = YOLO(str(write_model_yaml(cfg, run_dir / "model.yaml")))
    hsv = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4) if cfg.hsv else dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    start = time.perf_counter()
    model.train(
        data=str(data_yaml),
        imgsz=cfg.image_size,
        epochs=cfg.epochs,
        batch=cfg.batch_size,
        # Ultralytics accumulates gradients up to a nominal batch of 64 by default: with a few hundred
        # images that leaves a handful of optimiser steps per run. One step per batch learns far faster.
        nbs=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr0=cfg.lr0,
        warmup_epochs=cfg.warmup_epochs,
        mosaic=cfg.mosaic,
        close_mosaic=0,
        scale=cfg.scale,
        translate=cfg.translate,
        fliplr=cfg.fliplr,
        workers=cfg.workers,
        device=cfg.device,
        seed=cfg.seed,
        project=str(run_dir),
        name="ultralytics",
        exist_ok=True,
        pretrained=False,
        amp=False,
        cache="ram",
        val=False,
        plots=False,
        verbose=False,
        deterministic=False,
        **hsv,
    )
    seconds = time.perf_counter() - start
    trained = run_dir / "ultralytics" / "weights"
    source = trained / "best.pt" if (trained / "best.pt").is_file() else trained / "last.pt"
    shutil.copyfile(source, weights)
    info.write_text(
        json.dumps({"train_seconds": seconds, "config": to_dict(cfg), "data_digest": data_digest}, indent=2)
    )
    return TrainedDetector(weights, run_dir, key, seconds, reused=False)


def epoch_curves(trained: TrainedDetector) -> list[tuple[int, dict[str, float]]]:
    """Per-epoch training losses and learning rates Ultralytics wrote: ``(epoch, {name: value})``.

    Read from the run's ``results.csv``, which stays beside reused weights; empty when it is missing.
    An epoch written twice (a training interrupted and rerun appends to the file) keeps its last
    row. Only ``train/*`` and ``lr/*`` columns: training runs with ``val=False``, so the validation
    columns stay 0 until a final check.
    """
    import csv

    path = trained.run_dir / "ultralytics" / "results.csv"
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            values = {k.strip(): v for k, v in row.items() if k}
            by_epoch[int(float(values["epoch"]))] = {
                k: float(v)
                for k, v in values.items()
                if k.startswith(("train/", "lr/")) and v not in (None, "") and math.isfinite(float(v))
            }
    return sorted(by_epoch.items())


def trained_detector_config(cfg: DetectorTrainConfig, weights: Path, **overrides: Any) -> DetectorConfig:
    """Inference settings matching a detector trained with ``cfg``."""
    base = DetectorConfig(
        weights=str(weights), image_size=cfg.image_size, padding=cfg.padding, device=cfg.device
    )
    return dataclasses.replace(base, **overrides)
