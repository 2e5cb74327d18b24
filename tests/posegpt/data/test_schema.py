"""The QA shard schema and row validation."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posegpt.data.schema import QA_SCHEMA, REJECT_SCHEMA, SCHEMA_VERSION, TASKS, empty_row, validate_row


def good_row(**changes):
    row = empty_row(
        sample_id="posescript:1",
        task="text2pose",
        source="posescript",
        split="train",
        conversation=[
            {"role": "user", "content": "Give the pose: standing."},
            {"role": "assistant", "content": "Here it is <POSE>."},
        ],
        poses=[[0.1] * 72],
        caption="standing.",
        label_source="human",
        meta="{}",
    )
    row.update(changes)
    return row


def test_schema_matches_design_table() -> None:
    assert SCHEMA_VERSION == 1
    # DESIGN.md's five tasks come first (the detection helper adds query-only tasks after them).
    assert TASKS[:5] == ("text2pose", "image2pose", "vqa", "spg", "rpe")
    assert QA_SCHEMA.names == [
        "sample_id",
        "task",
        "source",
        "split",
        "conversation",
        "image",
        "poses",
        "betas",
        "caption",
        "label_source",
        "meta",
    ]
    assert QA_SCHEMA.field("poses").type == pa.list_(pa.list_(pa.float32(), 72))
    assert QA_SCHEMA.field("betas").type == pa.list_(pa.float32())
    assert QA_SCHEMA.field("conversation").type == pa.list_(
        pa.struct([("role", pa.string()), ("content", pa.string())])
    )
    assert QA_SCHEMA.field("image").type == pa.binary() and QA_SCHEMA.field("image").nullable
    assert REJECT_SCHEMA.names == ["sample_id", "source", "file", "reason", "meta"]


def test_rows_with_null_poses_round_trip_through_parquet() -> None:
    rows = [
        good_row(),
        good_row(
            sample_id="llava:1",
            task="vqa",
            poses=None,
            conversation=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        ),
    ]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=QA_SCHEMA), buf)
    back = pq.read_table(io.BytesIO(buf.getvalue()))
    assert back.schema.equals(QA_SCHEMA)
    assert back.column("poses").to_pylist()[1] is None
    np.testing.assert_allclose(back.column("poses").to_pylist()[0][0], [0.1] * 72, rtol=1e-6)


def test_a_good_row_passes() -> None:
    assert validate_row(good_row()) is None
    assert validate_row(good_row(betas=[0.0] * 10)) is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"task": "dance"}, "unknown task"),
        ({"split": "dev"}, "unknown split"),
        ({"poses": [[math.nan] + [0.0] * 71]}, "non-finite"),
        ({"poses": [[0.0] * 69]}, "shape"),
        ({"poses": [[40.0] + [0.0] * 71]}, "degrees"),
        ({"poses": [[0.0] * 72, [0.0] * 72]}, "<POSE> 1 times for 2 poses"),
        ({"poses": None}, "needs a pose"),
        ({"betas": [0.0] * 9}, "betas"),
        ({"caption": "  "}, "caption is empty"),
        ({"meta": "[1]"}, "meta"),
        ({"label_source": "crowd"}, "label_source"),
        ({"image": b"\xff\xd8"}, "<image> 0 times"),
        ({"conversation": [{"role": "assistant", "content": "<POSE>"}]}, "expected 'user'"),
        (
            {
                "conversation": [
                    {"role": "user", "content": "<POSE>?"},
                    {"role": "assistant", "content": "<POSE>"},
                ]
            },
            "(user) holds",
        ),
        ({"conversation": [{"role": "user", "content": "q"}]}, "ends with a user turn"),
        ({"task": "image2pose"}, "needs an image"),
    ],
)
def test_bad_rows_are_named(changes, fragment) -> None:
    reason = validate_row(good_row(**changes))
    assert reason is not None and fragment in reason, reason


def test_image_marker_must_be_in_first_user_turn() -> None:
    conv = [
        {"role": "user", "content": "Look."},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "<image>\nAnd now?"},
        {"role": "assistant", "content": "Fine."},
    ]
    row = good_row(task="vqa", poses=None, image=b"x", conversation=conv, meta=json.dumps({"a": 1}))
    assert "only the first user turn" in validate_row(row)
