"""The ``image_folder`` source: a folder of photos without annotations → one crop row per detected person."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.prepare import prepare
from pipelines.prepare_config import PrepareConfig
from pipelines.synthetic.appearance import background
from posegpt.config import ConfigError, load_config
from posegpt.data.crops import crop_box, encode_jpeg
from posegpt.data.schema import validate_row
from posegpt.detect import box_iou


def _unannotated_folder(world: Path, folder: Path) -> dict[str, np.ndarray]:
    """Held-out RPE scenes (by split) and single-person images copied without any annotation file.

    Returns the ground-truth boxes of every copied image (relative path → (N, 4)),
    read from the world's files only to check the result.
    """
    truth: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        scenes: dict[str, list[list[float]]] = {}
        for entry in json.loads((world / "rpe" / f"rpe_{split}.json").read_text()):
            scenes.setdefault(entry["image"], []).append(entry["person"]["bbox"])
        for image, boxes in sorted(scenes.items())[:3]:
            rel = f"{split}/scene_{Path(image).name}"
            truth[rel] = np.array(boxes)
        with np.load(world / "spin" / f"{split}.npz") as npz:
            for name, box in list(zip(npz["imgname"], npz["bbox"], strict=True))[:2]:
                truth[f"{split}/single_{Path(str(name)).name}"] = box[None]
    for rel in truth:
        split, name = rel.split("/")
        kind, _, base = name.partition("_")
        source = world / ("rpe" if kind == "scene" else "spin") / "images" / split / base
        (folder / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / rel)
    return truth


@pytest.mark.slow
def test_prepare_crops_people_from_a_folder_without_annotations(
    synthetic_world: Path, synthetic_detector, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    truth = _unannotated_folder(synthetic_world, folder)
    # Nobody in these: a textured background and a grey picture; and a file that is not an image.
    Image.fromarray(background(np.random.default_rng(7), 256)[0]).save(folder / "val" / "empty_wall.png")
    Image.new("RGB", (200, 160), (128, 128, 128)).save(folder / "test" / "empty_grey.jpg")
    (folder / "test" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not read")

    det = synthetic_detector.config
    out = tmp_path / "shards"
    cfg = load_config(
        PrepareConfig,
        None,
        [
            f"out={out}",
            "engine=local",
            "image_size=64",
            "max_reject_fraction=0.5",
            "tracking.enabled=false",
            f"sources.photos.path={folder}",
            "sources.photos.reader=image_folder",
            "sources.photos.dataset=photos",
            f"sources.photos.detector.weights={det.weights}",
            f"sources.photos.detector.image_size={det.image_size}",
            f"sources.photos.detector.padding={det.padding}",
            "sources.photos.detector.min_score=0.25",
        ],
    )
    result = prepare(cfg)
    stats = result.per_input["photos"]
    assert stats["read"] == stats["accepted"] + stats["rejected"]

    rows = [
        row for split in ("val", "test") for row in pq.read_table(out / "person_crop" / split).to_pylist()
    ]
    assert (
        stats["accepted"]
        == len(rows)
        == result.manifest["counts"]["person_crop"]["val"] + result.manifest["counts"]["person_crop"]["test"]
    )
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        assert validate_row(row) is None
        assert row["poses"] is None and len(row["conversation"]) == 1
        assert row["conversation"][0]["content"].startswith("<image>\n")
        meta = json.loads(row["meta"])
        assert row["split"] == meta["image"].split("/")[0]
        by_image.setdefault(meta["image"], []).append({**row, "meta": meta})
    assert not {"val/empty_wall.png", "test/empty_grey.jpg"} & set(by_image)

    matched = total = 0
    for rel, boxes in truth.items():
        found = by_image.get(rel, [])
        total += len(boxes)
        if not found:
            continue
        predicted = np.array([r["meta"]["bbox"] for r in found])
        matched += int((box_iou(predicted, boxes).max(axis=0) >= 0.5).sum())
        # Each crop is the detected box cut by the shared crop function, padded like SPIN boxes.
        with Image.open(folder / rel) as im:
            pixels = np.asarray(im.convert("RGB"))
        for r in found:
            x0, y0, x1, y1 = r["meta"]["bbox"]
            cx, cy = r["meta"]["center"]
            side = r["meta"]["box_size"]
            assert (cx, cy) == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2), abs=0.01)
            assert side == pytest.approx(max(x1 - x0, y1 - y0) * det.padding, abs=0.03)
            expected = crop_box(pixels, (cx, cy), side, cfg.crop_padding, 64)
            assert r["image"] == encode_jpeg(expected, cfg.jpeg_quality)
            assert r["meta"]["people"] == len(found) and r["meta"]["score"] >= 0.25
    # A small sample (about 20 people, most in scenes): the held-out mAP test holds the detector to 0.8.
    assert matched >= 0.7 * total

    rejects = pq.read_table(out / "rejects").to_pylist()
    reasons = {json.loads(r["meta"]).get("image"): r["reason"] for r in rejects}
    assert reasons["val/empty_wall.png"].startswith(f"no person detected in {folder}/val/empty_wall.png")
    assert reasons["test/empty_grey.jpg"].startswith("no person detected")
    assert "test/broken.jpg" in reasons["test/broken.jpg"]
    # Every image is accounted for: people found, nobody found, or unreadable.
    assert set(by_image) | set(reasons) == {
        *truth,
        "val/empty_wall.png",
        "test/empty_grey.jpg",
        "test/broken.jpg",
    }


def test_image_folder_needs_detector_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sources\.photos\.detector\.weights is empty"):
        load_config(
            PrepareConfig,
            None,
            [f"out={tmp_path}", f"sources.photos.path={tmp_path}", "sources.photos.reader=image_folder"],
        )


def test_image_folder_names_a_missing_weights_file(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "photos" / "a.png")
    cfg = load_config(
        PrepareConfig,
        None,
        [
            f"out={tmp_path / 'out'}",
            "engine=local",
            "tracking.enabled=false",
            f"sources.photos.path={tmp_path / 'photos'}",
            "sources.photos.reader=image_folder",
            f"sources.photos.detector.weights={tmp_path / 'missing.pt'}",
        ],
    )
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing.pt'} do not exist"):
        prepare(cfg)
