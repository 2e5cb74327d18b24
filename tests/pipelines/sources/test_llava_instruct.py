"""LLaVA mix665k reader: image and text-only rows, speaker mapping, malformed entries."""

from __future__ import annotations

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext
from pipelines.sources.llava_instruct import read
from tests.pipelines.sources.raw_files import write_json

ENTRIES = [
    {
        "id": "000001",
        "image": "coco/1.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "Colour?"},
            {"from": "gpt", "value": "Grey."},
        ],
    },
    {"id": 7, "conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"}]},
    {"id": "bad", "conversations": [{"from": "robot", "value": "beep"}]},
    ["not", "an", "object"],
]


def test_rows_and_rejects(tmp_path) -> None:
    write_json(tmp_path / "llava" / "mix.json", ENTRIES)
    src = SourceConfig(reader="llava", path="llava/mix.json", image_root="images")
    out = list(read("llava", src, ReadContext(str(tmp_path))))
    assert len(out) == 4
    first, text_only, bad, broken = out
    assert first["task"] == "vqa" and first["sample_id"] == "llava:000001" and first["split"] == "train"
    assert first["image"] == {"uri": str(tmp_path / "images" / "coco" / "1.jpg"), "crop": None}
    assert [t["role"] for t in first["conversation"]] == ["user", "assistant", "user", "assistant"]
    assert first["conversation"][0]["content"] == "<image>\nWhat is this?"
    assert text_only["image"] is None and text_only["sample_id"] == "llava:7"
    assert "llava:bad" in bad["reject"] and "unknown speaker" in bad["reject"]
    assert "entry 3" in broken["reject"]


def test_default_image_root_is_raw_root(tmp_path) -> None:
    write_json(tmp_path / "l.json", ENTRIES[:1])
    (row,) = list(read("llava", SourceConfig(reader="llava", path="l.json"), ReadContext(str(tmp_path))))
    assert row["image"]["uri"] == str(tmp_path / "coco" / "1.jpg")
