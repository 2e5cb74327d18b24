"""The RPE detected-crop baseline: the model answers the detected crop of the described person."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from posegpt.detect import detect_person_crop
from posegpt.evaluation.predict import (
    DETECTED_CROP_VARIANT,
    CropSpec,
    ModelSpec,
    PosePredictor,
    PredictJob,
    read_shard_files,
)
from posegpt.evaluation.shards import list_shard_files
from posegpt.inference import GenerationSettings, PoseGPT, Query
from posegpt.model.vision_input import decode_image
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.storage import StorageConfig

pytestmark = pytest.mark.slow


def _spec(checkpoint: Path) -> ModelSpec:
    return ModelSpec(
        checkpoint=str(checkpoint),
        base_model=None,
        cache_dir=str(DEFAULT_CACHE_DIR),
        storage=StorageConfig(),
        tracking_uri=None,
        device="cpu",
        dtype=None,
        torch_threads=1,
        max_new_tokens=12,
        seed=0,
    )


def _rpe_rows(shards: Path, n: int) -> pa.Table:
    files = list_shard_files(str(shards), "rpe", "test")
    items = [{"task": "rpe", "variant": DETECTED_CROP_VARIANT, "path": f, "ids": []} for f in files]
    table = read_shard_files(pa.Table.from_pylist(items), StorageConfig())
    return table.slice(0, n)


def test_detected_crop_reaches_the_model_and_misses_are_counted(
    prepared_shards: Path, synthetic_detector, posing_checkpoint_dir: Path
) -> None:
    crop = CropSpec(size=128, padding=1.2, detector=synthetic_detector.config, detect_min_iou=0.3)
    predictor = PosePredictor(_spec(posing_checkpoint_dir), crop)
    rows = _rpe_rows(prepared_shards, 6)
    # The last row's box is moved to an empty corner: no detection overlaps it.
    metas = rows.column("meta").to_pylist()
    last = json.loads(metas[-1])
    for key in ("bbox", "box", "gt_bbox", "person_bbox"):
        last.pop(key, None)
    last["bbox"] = [0.0, 0.0, 3.0, 3.0]
    metas[-1] = json.dumps(last)
    rows = rows.set_column(rows.column_names.index("meta"), "meta", pa.array(metas, pa.string()))

    out = predictor(rows)
    detected = out.column("detected").to_pylist()
    poses = out.column("pose").to_pylist()
    texts = out.column("text").to_pylist()
    assert detected[-1] is False and poses[-1] is None and texts[-1] == ""
    # The detector (mAP@0.5 >= 0.8 on held-out scenes) finds most described people.
    assert sum(detected[:-1]) >= 4, detected

    # Independently: detect, match and crop the first found person, then ask the model directly.
    first = detected.index(True)
    image = decode_image(rows.column("image")[first].as_py(), "row")
    box = json.loads(metas[first])["bbox"]
    expected_crop = detect_person_crop(np.asarray(image), synthetic_detector.detector(), box, 128)
    assert expected_crop is not None
    model = PoseGPT.from_checkpoint(posing_checkpoint_dir)
    model.model.merge_lora()
    conv = rows.column("conversation")[first].as_py()
    from posegpt.evaluation.shards import prompt_turns

    answer = model.batch(
        [Query(prompt_turns(conv, "row"), Image.fromarray(expected_crop.image))],
        GenerationSettings(max_new_tokens=12, temperature=0.0, seed=0),
    )[0]
    assert texts[first] == answer.text
    if len(answer.poses):
        np.testing.assert_allclose(np.asarray(poses[first]), answer.poses[0], atol=1e-4)


def test_bad_variant_is_named() -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        PredictJob("rpe", [], [], variant="detected")
