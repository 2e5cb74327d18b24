"""``jobs/train_detector.py``: the world in YOLO's format, training reuse, held-out mAP and MLflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from jobs.train_detector import main
from pipelines.synthetic.yolo_dataset import (
    NEGATIVE_PREFIX,
    label_lines,
    read_label_file,
    world_labeled_images,
    write_yolo_dataset,
)
from posegpt.config import load_config
from posegpt.detect import DetectorConfig
from tests.fixtures.detection import DETECTOR_CACHE, world_root


def test_label_lines_normalise_and_clip() -> None:
    boxes = np.array([[10, 20, 50, 100], [-20, 0, 30, 60], [300, 0, 320, 40]], dtype=float)
    lines = label_lines(boxes, width=200, height=100)
    # The second box is cut at the left border; the third lies outside the image and is dropped.
    assert lines == ["0 0.150000 0.600000 0.200000 0.800000", "0 0.075000 0.300000 0.150000 0.600000"]


def test_world_images_in_yolo_format(synthetic_world, tmp_path: Path) -> None:
    root = world_root(synthetic_world)
    manifest = json.loads((root / "world.json").read_text())
    # Expected boxes read straight from the world's files, image by image.
    expected: dict[str, tuple[str, list[list[float]]]] = {}
    for dataset in ("spin", "hmr2"):
        for split, info in manifest[dataset].items():
            with np.load(root / info["npz"]) as npz:
                for name, box in zip(npz["imgname"], npz["bbox"], strict=True):
                    expected[f"{dataset}/{name}"] = (split, [box.tolist()])
    for split, info in manifest["rpe"].items():
        for entry in json.loads((root / info["json"]).read_text()):
            expected.setdefault(f"rpe/{entry['image']}", (split, []))[1].append(entry["person"]["bbox"])

    found = world_labeled_images(root)
    assert found.skipped == {}
    dataset = write_yolo_dataset(found.items, tmp_path / "yolo")
    spec = yaml.safe_load(dataset.data_yaml.read_text())
    assert spec["names"] == {0: "person"} and Path(spec["path"]) == (tmp_path / "yolo").resolve()
    assert len(dataset.train) + len(dataset.val) == len(expected)
    assert {it.split for it in dataset.train} == {"train"}
    assert {it.split for it in dataset.val} == {"val", "test"}
    for split, members in (("train", dataset.train), ("val", dataset.val)):
        for item in members:
            rel = item.path.relative_to(root).as_posix()
            world_split, boxes = expected[rel]
            assert (split == "train") == (world_split == "train"), rel
            image = tmp_path / "yolo" / "images" / split / item.name
            assert image.read_bytes() == item.path.read_bytes()
            with Image.open(image) as im:
                width, height = im.size
            label = tmp_path / "yolo" / "labels" / split / Path(item.name).with_suffix(".txt").name
            values = np.array([line.split()[1:] for line in label.read_text().splitlines()], float)
            assert values.min() >= 0.0 and values.max() <= 1.0
            truth = np.clip(np.array(boxes), 0, [width, height, width, height])
            np.testing.assert_allclose(read_label_file(label, width, height), truth, atol=1e-3)
    # Same inputs, same digest; a subset of the training images changes it.
    assert write_yolo_dataset(found.items, tmp_path / "again").digest == dataset.digest
    subset = write_yolo_dataset(found.items, tmp_path / "subset", max_train_images=10)
    assert len(subset.train) == 10 and len(subset.val) == len(dataset.val)
    assert subset.digest != dataset.digest
    # Person-free images join the training split only, with empty labels, the same ones each time.
    negatives = write_yolo_dataset(found.items, tmp_path / "neg", max_train_images=10, negative_fraction=0.5)
    added = sorted((tmp_path / "neg" / "images" / "train").glob(f"{NEGATIVE_PREFIX}*.png"))
    assert len(added) == 5 and negatives.digest != subset.digest
    assert len(list((tmp_path / "neg" / "images" / "val").iterdir())) == len(dataset.val)
    sizes = set()
    for image in added:
        label = tmp_path / "neg" / "labels" / "train" / image.with_suffix(".txt").name
        assert label.read_bytes() == b""
        with Image.open(image) as im:
            sizes.add(im.size)
    assert len(sizes) == 5  # sizes and aspect ratios vary
    again = write_yolo_dataset(found.items, tmp_path / "neg2", max_train_images=10, negative_fraction=0.5)
    assert again.digest == negatives.digest
    with pytest.raises(ValueError, match="negative_fraction"):
        write_yolo_dataset(found.items, tmp_path / "bad", negative_fraction=1.5)


@pytest.mark.slow
def test_job_reuses_trained_weights_and_logs_to_mlflow(
    synthetic_detector, synthetic_world, mlflow_server: str, tmp_path: Path
) -> None:
    import mlflow

    out = tmp_path / "job"
    experiment = f"detector-test-{tmp_path.name}"
    argv = [
        "--world",
        str(world_root(synthetic_world)),
        "--out",
        str(out),
        "--weights-cache",
        str(DETECTOR_CACHE),
        f"tracking.tracking_uri={mlflow_server}",
        f"tracking.experiment={experiment}",
    ]
    assert main(argv) == 0
    report = json.loads((out / "metrics.json").read_text())
    first = synthetic_detector.report
    # Same preset and world as the session fixture: the weights are reused, not trained again.
    assert report["reused"] is True
    assert (report["key"], report["trained_weights"]) == (first["key"], first["trained_weights"])
    assert report["map50"] == pytest.approx(first["map50"], abs=1e-9) and report["map50"] >= 0.8
    detector_cfg = load_config(DetectorConfig, out / "detector.yaml")
    assert Path(detector_cfg.weights) == out / "detector.pt" == Path(report["weights"])
    assert (out / "detector.pt").read_bytes() == Path(first["trained_weights"]).read_bytes()
    assert detector_cfg.image_size == synthetic_detector.train_config.image_size

    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["map50"] == pytest.approx(report["map50"])
    assert run.data.params["image_size"] == str(synthetic_detector.train_config.image_size)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"detector.pt", "detector.yaml", "metrics.json"} <= artifacts
    # The per-epoch training curves, as Ultralytics wrote them beside the (reused) weights.
    with (Path(first["trained_weights"]).parent / "ultralytics" / "results.csv").open() as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    last = {int(float(r["epoch"])): float(r["train/box_loss"]) for r in rows}  # a rerun epoch: its last row
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/box_loss")
    assert (
        sorted(m.step for m in history)
        == sorted(last)
        == list(range(1, synthetic_detector.train_config.epochs + 1))
    )
    for m in history:
        assert m.value == pytest.approx(last[m.step], rel=1e-5)


def test_job_names_a_folder_that_is_not_a_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--world", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), "tracking.enabled=false"])
        == 2
    )
    assert f"{tmp_path / 'nothing' / 'world.json'} does not exist" in capsys.readouterr().err


def test_job_rejects_unknown_config_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--world", str(tmp_path), "--out", str(tmp_path / "out"), "epoch=3"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
