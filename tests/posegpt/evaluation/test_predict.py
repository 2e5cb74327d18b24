"""Pieces of the prediction pipeline that run without Ray: shard reading and the ground-truth crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from posegpt.evaluation.predict import CropSpec, crop_to_box, read_shard_files
from posegpt.evaluation.shards import list_shard_files, prompt_turns
from posegpt.storage import StorageConfig


def test_read_shard_files(eval_shards: Path) -> None:
    files = list_shard_files(str(eval_shards), "text2pose", "test")
    batch = pa.Table.from_pylist(
        [
            {"task": "text2pose", "variant": "as_is", "path": files[0], "ids": []},
            {
                "task": "text2pose",
                "variant": "gt_crop",
                "path": files[1],
                "ids": ["synthetic:text2pose-test-12"],
            },
        ]
    )
    table = read_shard_files(batch, StorageConfig())
    ids = table.column("sample_id").to_pylist()
    assert ids == [f"synthetic:text2pose-test-{i}" for i in range(10)] + ["synthetic:text2pose-test-12"]
    assert table.column("variant").to_pylist() == ["as_is"] * 10 + ["gt_crop"]
    assert set(table.column_names) == {
        "sample_id",
        "conversation",
        "image",
        "meta",
        "caption",
        "poses",
        "task",
        "variant",
    }


def test_read_shard_files_asks_with_a_preset(eval_shards: Path) -> None:
    from posegpt.data.templates import expand

    files = list_shard_files(str(eval_shards), "text2pose", "test")
    item = {"task": "text2pose", "variant": "as_is", "path": files[0], "ids": []}
    asked = read_shard_files(
        pa.Table.from_pylist([{**item, "prompt_preset": "chatpose", "prompt_seed": 5}]), StorageConfig()
    )
    for sid, caption, conv in zip(
        asked.column("sample_id").to_pylist(),
        asked.column("caption").to_pylist(),
        asked.column("conversation").to_pylist(),
        strict=True,
    ):
        # The actor's query: the preset's question rebuilt from the caption, with the driver's seed.
        assert prompt_turns(conv, sid) == expand("text2pose", caption, sid, 5, "chatpose")[0][:1]
    plain = read_shard_files(
        pa.Table.from_pylist([{**item, "prompt_preset": "", "prompt_seed": 5}]), StorageConfig()
    )
    assert plain.column("conversation") != asked.column("conversation")


def test_crop_to_box() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:60, 120:140] = (255, 0, 0)  # the "person": a red box 20 wide, 40 tall
    crop = np.asarray(crop_to_box(Image.fromarray(img), [120, 20, 140, 60], CropSpec(size=40, padding=1.0)))
    assert crop.shape == (40, 40, 3)
    # A square of the box's longer side (40) around its centre: the red band fills the middle half.
    red = crop[:, :, 0] > 128
    assert red[:, 12:28].mean() > 0.9 and red[:, :8].mean() < 0.05 and red[:, 32:].mean() < 0.05
    with pytest.raises(ValueError, match="is empty"):
        crop_to_box(Image.fromarray(img), [10, 10, 10, 30], CropSpec())
