"""Person detection: box metrics, weights checks, and the synthetic detector on held-out scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posegpt.config import ConfigError, load_config
from posegpt.detect import (
    DetectorConfig,
    DetectorError,
    DetectorTrainConfig,
    PersonBox,
    PersonDetector,
    average_precision,
    box_iou,
    configure_ultralytics,
    training_key,
)

REPO = Path(__file__).resolve().parents[2]


def test_box_iou_matches_hand_computed_overlaps() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], dtype=float)
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 20]], dtype=float)
    iou = box_iou(a, b)
    # [5,5,15,15] vs [0,0,10,10]: 25 / (100 + 100 - 25); vs [0,0,5,20]: no overlap.
    expected = np.array([[1.0, 0.0, 50 / 150], [25 / 175, 25 / 175, 0.0]])
    np.testing.assert_allclose(iou, expected, atol=1e-12)


def _box(xyxy: tuple[float, float, float, float], score: float) -> PersonBox:
    return PersonBox(*xyxy, score=score)


def test_average_precision_ranks_and_matches_like_voc() -> None:
    gt = [np.array([[0, 0, 10, 20], [30, 0, 40, 20]], float), np.array([[5, 5, 15, 25]], float)]
    predictions = [
        [
            _box((0, 0, 10, 20), 0.9),  # TP (gt 0 of image 0)
            _box((1, 0, 11, 20), 0.6),  # duplicate of an already matched box: FP
            _box((30, 1, 40, 21), 0.5),  # TP (gt 1 of image 0)
        ],
        [
            _box((50, 50, 60, 60), 0.8),  # FP, nothing there
            _box((5, 5, 15, 25), 0.7),  # TP
        ],
    ]
    # Ranked: TP, FP, TP, FP, TP -> precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1.
    # Envelope at the three recall steps: 1, 2/3, 3/5.
    expected = (1.0 + 2 / 3 + 3 / 5) / 3
    assert average_precision(predictions, gt) == pytest.approx(expected)
    # A stricter threshold turns the 0.5 box (IoU 19/21 ≈ 0.90 with its target) into a miss.
    assert average_precision(predictions, gt, iou_threshold=0.95) == pytest.approx((1.0 + 2 / 3) / 3)
    assert average_precision([[], []], gt) == 0.0
    with pytest.raises(ValueError, match="2 prediction lists for 1 images"):
        average_precision(predictions, gt[:1])


def test_match_box_picks_the_most_overlapping_detection() -> None:
    from posegpt.detect import match_box

    boxes = [_box((0, 0, 10, 20), 0.9), _box((8, 0, 18, 20), 0.8)]
    # IoU with the target: 20/380 for the first box, 180/220 for the second.
    target = (9, 0, 19, 20)
    assert match_box(boxes, target) is boxes[1]
    assert match_box(boxes, (100, 100, 110, 120)) is None
    assert match_box([], target) is None
    # A box twice as tall over the first: IoU 200/400 = 0.5 exactly (the second: 40/560).
    assert match_box(boxes, (0, 0, 10, 40), min_iou=0.6) is None
    assert match_box(boxes, (0, 0, 10, 40), min_iou=0.5) is boxes[0]


def test_person_box_geometry_and_json() -> None:
    box = PersonBox(10.0, 20.0, 50.0, 120.0, score=0.87654)
    assert box.center == (30.0, 70.0)
    assert (box.width, box.height, box.size) == (40.0, 100.0, 100.0)
    assert box.to_dict() == {"xyxy": [10.0, 20.0, 50.0, 120.0], "score": 0.8765}


def test_detector_config_rejects_bad_values(tmp_path: Path) -> None:
    preset = tmp_path / "det.yaml"
    preset.write_text("min_score: 0.5\nimage_size: 160\n")
    cfg = load_config(DetectorConfig, preset, ["padding=1.3"])
    assert (cfg.min_score, cfg.image_size, cfg.padding) == (0.5, 160, 1.3)
    with pytest.raises(DetectorError, match="multiple of 32"):
        load_config(DetectorConfig, preset, ["image_size=100"])
    with pytest.raises(DetectorError, match="min_score"):
        load_config(DetectorConfig, None, ["min_score=1.5"])
    with pytest.raises(ConfigError, match="min_scor"):
        load_config(DetectorConfig, None, ["min_scor=0.5"])


def test_every_detector_preset_loads() -> None:
    presets = sorted((REPO / "configs" / "detect").glob("*.yaml"))
    assert presets, "configs/detect/ has no presets"
    for preset in presets:
        load_config(DetectorTrainConfig, preset)


def test_training_key_follows_settings_and_data_only() -> None:
    cfg = DetectorTrainConfig()
    key = training_key(cfg, "data-a")
    assert training_key(DetectorTrainConfig(threads=1, reuse=False, device="cuda"), "data-a") == key
    assert training_key(DetectorTrainConfig(epochs=cfg.epochs + 1), "data-a") != key
    assert training_key(cfg, "data-b") != key


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "yolov8n.pt"
    with pytest.raises(DetectorError, match=f"{missing} do not exist"):
        PersonDetector(DetectorConfig(weights=str(missing)))
    with pytest.raises(DetectorError, match="weights is empty"):
        PersonDetector(DetectorConfig())


@pytest.mark.parametrize(
    ("name", "content"),
    [("image.pt", "png"), ("text.pt", b"not a checkpoint"), ("state.pt", "state_dict"), ("empty.pt", b"")],
)
def test_file_that_is_not_a_yolo_model_is_named(tmp_path: Path, name: str, content: object) -> None:
    path = tmp_path / name
    if content == "png":
        Image.new("RGB", (8, 8)).save(path, format="PNG")
    elif content == "state_dict":
        torch.save({"weight": torch.zeros(3)}, path)
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(DetectorError, match=f"{path}"):
        PersonDetector(DetectorConfig(weights=str(path)))


def test_wrong_suffix_and_wrong_task_and_missing_person_class(tmp_path: Path) -> None:
    configure_ultralytics()
    from ultralytics import YOLO

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x01")
    with pytest.raises(DetectorError, match=f"{onnx}: expected an Ultralytics .pt"):
        PersonDetector(DetectorConfig(weights=str(onnx)))

    classifier = tmp_path / "classifier.pt"
    YOLO("yolov8n-cls.yaml").save(classifier)
    with pytest.raises(DetectorError, match=f"{classifier} hold a YOLO 'classify' model"):
        PersonDetector(DetectorConfig(weights=str(classifier)))

    unnamed = tmp_path / "unnamed.pt"
    model = YOLO("yolov8n.yaml")
    model.model.names = {i: f"thing{i}" for i in range(80)}
    model.save(unnamed)
    with pytest.raises(DetectorError, match=f"{unnamed} have no class named 'person'"):
        PersonDetector(DetectorConfig(weights=str(unnamed)))


# --- the synthetic detector (trained once per session, or reused from .cache/detector) -------------


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.slow
def test_synthetic_detector_finds_people_in_held_out_images(synthetic_detector) -> None:
    from pipelines.synthetic.yolo_dataset import gt_boxes

    held_out = synthetic_detector.held_out
    assert {item.kind for item in held_out} == {"single", "scene"}
    detector = synthetic_detector.detector(min_score=0.01)
    predictions = detector.detect([_rgb(item.path) for item in held_out])
    truth = gt_boxes(held_out)
    ap = average_precision(predictions, truth)
    assert ap >= 0.8, synthetic_detector.report
    assert ap == pytest.approx(synthetic_detector.report["map50"], abs=1e-6)
    scenes = [i for i, item in enumerate(held_out) if item.kind == "scene"]
    assert average_precision([predictions[i] for i in scenes], [truth[i] for i in scenes]) >= 0.7
    # At the working threshold nearly every person of a scene is found once, and nothing else.
    found = synthetic_detector.detector().detect([_rgb(held_out[i].path) for i in scenes])
    hits = [
        int((box_iou(np.array([b.xyxy for b in boxes]).reshape(-1, 4), truth[i]).max(axis=0) >= 0.5).sum())
        for boxes, i in zip(found, scenes, strict=True)
    ]
    assert sum(hits) >= 0.8 * sum(len(truth[i]) for i in scenes)
    assert sum(len(b) for b in found) <= 1.2 * sum(len(truth[i]) for i in scenes)


@pytest.mark.slow
def test_batched_detection_equals_one_at_a_time(synthetic_detector) -> None:
    images = [_rgb(item.path) for item in synthetic_detector.held_out[:5]]
    detector = synthetic_detector.detector(batch_size=4)
    batched = detector.detect(images)
    for image, boxes in zip(images, batched, strict=True):
        single = detector.detect_one(image)
        assert len(single) == len(boxes)
        for a, b in zip(single, boxes, strict=True):
            np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.5)
            assert a.score == pytest.approx(b.score, abs=1e-3)


@pytest.mark.slow
def test_image_without_people_gives_no_boxes(synthetic_detector) -> None:
    from pipelines.synthetic.appearance import background

    detector = synthetic_detector.detector()
    size = 256
    backgrounds = [background(np.random.default_rng(seed), size)[0] for seed in range(4)]
    grey = np.full((size, size, 3), 128, np.uint8)
    assert detector.detect([grey, *backgrounds]) == [[] for _ in range(5)]
    assert detector.detect([]) == []
    # Pixel noise, the service's abuse case (it found 2 people in noise before negatives were trained on).
    rng = np.random.default_rng(12345)
    noise = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((640, 640, 3), (480, 320, 3))]
    assert detector.detect(noise) == [[], []]


@pytest.mark.slow
def test_person_at_the_border_is_cropped_with_fill(synthetic_detector) -> None:
    from posegpt.data.crops import crop_box
    from posegpt.detect import crops_for_boxes, detect_and_crop

    # A held-out single-person image cut so that the person's left edge is the image's left edge.
    item = next(it for it in synthetic_detector.held_out if it.kind == "single")
    x0 = int(np.floor(item.boxes[0, 0]))
    image = np.ascontiguousarray(_rgb(item.path)[:, x0:])
    detector = synthetic_detector.detector()
    crops = detect_and_crop(image, detector, out_size=64)
    assert len(crops) == 1
    box = crops[0].box
    assert box.x0 <= 3.0
    truth = item.boxes[0] - np.array([x0, 0, x0, 0])
    assert box_iou(np.array([box.xyxy]), truth[None])[0, 0] >= 0.6
    crop = crops[0].image
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    # Same pixels as the crop function the prepare job uses, given the box.
    expected = np.asarray(crop_box(image, box.center, box.size, detector.cfg.padding, 64))
    np.testing.assert_array_equal(crop, expected)
    assert [c.image.tobytes() for c in crops_for_boxes(image, [box], 64, detector.cfg.padding)] == [
        crop.tobytes()
    ]
    # The crop reaches past the left border: its left columns are fill, not image.
    side = box.size * detector.cfg.padding
    outside = int(np.floor((side / 2 - box.center[0]) / side * 64))
    assert outside >= 2
    assert np.ptp(crop[:, : outside - 1].reshape(-1, 3), axis=0).max() == 0


@pytest.mark.gpu
def test_detection_on_gpu_matches_cpu(synthetic_detector) -> None:
    images = [_rgb(item.path) for item in synthetic_detector.held_out[:4]]
    cpu = synthetic_detector.detector().detect(images)
    gpu = synthetic_detector.detector(device="cuda").detect(images)
    for a, b in zip(cpu, gpu, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.xyxy, y.xyxy, atol=2.0)


@pytest.mark.slow
def test_detected_crop_of_each_described_person(synthetic_detector) -> None:
    from posegpt.detect import detect_person_crop

    detector = synthetic_detector.detector()
    found = total = 0
    for item in (it for it in synthetic_detector.held_out if it.kind == "scene"):
        image = _rgb(item.path)
        for target in item.boxes:
            total += 1
            crop = detect_person_crop(image, detector, target, out_size=48)
            if crop is None:
                continue
            assert crop.image.shape == (48, 48, 3)
            found += box_iou(np.array([crop.box.xyxy]), target[None])[0, 0] >= 0.5
    assert found >= 0.8 * total
    assert detect_person_crop(np.full((128, 128, 3), 90, np.uint8), detector, (10, 10, 50, 100), 48) is None
