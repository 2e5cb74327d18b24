"""Reading evaluation rows: prompts, captions, groups, and clear errors for bad shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posegpt.evaluation.shards import ShardError, prompt_turns, read_task_rows
from tests.fixtures.evaluation import make_row, write_rows


def test_reads_rows_in_file_order(eval_shards: Path) -> None:
    rows = read_task_rows(str(eval_shards), "text2pose", "test", need_captions=True)
    assert len(rows) == 24 and len(rows.files) == 3 and rows.complete
    assert rows.sample_ids[0].endswith("test-0") and rows.sample_ids[-1].endswith("test-23")
    assert rows.poses.shape == (24, 72) and rows.poses.dtype == np.float32
    assert rows.prompts[0] == [{"role": "user", "content": "Show me the pose of a person standing."}]
    assert rows.query_texts() == rows.captions
    cut = read_task_rows(str(eval_shards), "text2pose", "test", max_rows=12)
    assert len(cut) == 12 and not cut.complete and len(cut.files) == 2
    rpe = read_task_rows(str(eval_shards), "rpe", "test")
    assert rpe.description_types() == ["outfit", "pose", "outfit", "behaviour", "pose", "outfit"]
    assert rpe.bboxes()[1] == [11.0, 8.0, 51.0, 70.0]
    img = read_task_rows(str(eval_shards), "image2pose", "test")
    assert img.description_types() is None and img.prompts[0][0]["content"].startswith("<image>\n")
    assert img.query_texts()[0] == "Show me the pose of a person standing."


def test_prompt_turns() -> None:
    conv = [
        {"role": "user", "content": "What is she doing?"},
        {"role": "assistant", "content": "Dancing."},
        {"role": "user", "content": "Show her pose."},
        {"role": "assistant", "content": "<POSE>"},
    ]
    assert prompt_turns(conv, "x") == conv[:3]
    with pytest.raises(ShardError, match="no assistant turn holds <POSE>"):
        prompt_turns(conv[:2], "x")


def test_bad_shards(tmp_path: Path) -> None:
    pose = np.zeros(72, np.float32)
    with pytest.raises(ShardError, match=r"no Parquet shards in .*text2pose/test"):
        read_task_rows(str(tmp_path), "text2pose", "test")
    write_rows(tmp_path, "text2pose", "test", [])
    with pytest.raises(ShardError, match="split of 'text2pose' is empty"):
        read_task_rows(str(tmp_path), "text2pose", "test")
    write_rows(tmp_path, "spg", "test", [make_row("spg", "test", 0, pose), make_row("spg", "test", 1, None)])
    with pytest.raises(ShardError, match="sample 'synthetic:spg-test-1' has no ground-truth pose"):
        read_task_rows(str(tmp_path), "spg", "test")
    write_rows(tmp_path, "rpe", "test", [make_row("rpe", "test", 0, pose, caption=None)])
    with pytest.raises(ShardError, match="has no caption"):
        read_task_rows(str(tmp_path), "rpe", "test", need_captions=True)
    write_rows(tmp_path, "image2pose", "test", [make_row("image2pose", "test", 0, pose)] * 2)
    with pytest.raises(ShardError, match="appears twice"):
        read_task_rows(str(tmp_path), "image2pose", "test")
    write_rows(tmp_path, "vqa", "test", [make_row("vqa", "test", 0, pose, answer="No pose here.")])
    with pytest.raises(ShardError, match="no assistant turn holds <POSE>"):
        read_task_rows(str(tmp_path), "vqa", "test")
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "text2pose" / "val"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"sample_id": ["a"]}), folder / "part-0.parquet")
    with pytest.raises(ShardError, match=r"part-0.parquet: missing columns \['task'"):
        read_task_rows(str(tmp_path), "text2pose", "val")


def test_subset_per_source_and_rephrasing(eval_shards: Path) -> None:
    from posegpt.data.templates import CHATPOSE_TEXT_QUESTIONS

    rows = read_task_rows(str(eval_shards), "text2pose", "test", need_captions=True)
    # Two sources, so a subset of 5 per source holds 10 rows, 5 of each, in file order.
    rows.sources[:] = ["3dpw" if i % 3 else "h36m" for i in range(len(rows))]
    sub = rows.subset_per_source(5, seed=0)
    assert len(sub) == 10 and sorted(set(sub.sources)) == ["3dpw", "h36m"] and sub.sources.count("h36m") == 5
    order = [rows.sample_ids.index(s) for s in sub.sample_ids]
    assert order == sorted(order) and not sub.complete
    np.testing.assert_array_equal(sub.poses, rows.poses[order])
    assert (
        sub.sample_ids
        == rows.subset_per_source(5, seed=0).sample_ids
        != rows.subset_per_source(5, 1).sample_ids
    )
    asked = rows.rephrased("chatpose", seed=0)
    assert asked.sample_ids == rows.sample_ids and asked.poses is rows.poses
    for prompt, caption in zip(asked.prompts, rows.captions, strict=True):
        assert len(prompt) == 1 and prompt[0]["content"] in {
            q.format(caption=caption) for q in CHATPOSE_TEXT_QUESTIONS
        }
    rows.captions[2] = None
    with pytest.raises(
        ShardError, match=r"sample '.*test-2' has no caption, so its question cannot be asked"
    ):
        rows.rephrased("chatpose", 0)
