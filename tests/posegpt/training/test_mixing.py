"""Per-batch task mixing: exact composition, independent cycling, resume positions."""

from __future__ import annotations

import itertools
import math

import pytest

from posegpt.training.mixing import (
    TASKS,
    CyclingSource,
    EmptySourceError,
    SourcePosition,
    TaskMixer,
    split_counts,
)


class CountingStream:
    """Rows ``<task>:<i>`` of a fixed-length task; counts how often an epoch was opened."""

    def __init__(self, task: str, length: int) -> None:
        self.task = task
        self.rows = [{"sample_id": f"{task}:{i}", "task": task} for i in range(length)]
        self.opened = 0

    def __call__(self):
        self.opened += 1
        return iter(list(self.rows))


def make_mixer(lengths: dict[str, int], batch: int, ratio: dict[str, int], starts=None):
    streams = {t: CountingStream(t, n) for t, n in lengths.items()}
    sources = {t: CyclingSource(t, s, (starts or {}).get(t)) for t, s in streams.items()}
    return TaskMixer(sources, split_counts(batch, ratio)), streams


def test_default_ratio_of_16_is_8_4_4():
    assert split_counts(16, {"image2pose": 2, "text2pose": 1, "vqa": 1}) == {
        "image2pose": 8,
        "text2pose": 4,
        "vqa": 4,
    }


@pytest.mark.parametrize("batch", [4, 5, 7, 10, 16, 33])
@pytest.mark.parametrize("ratio", [(2, 1, 1), (3, 2, 0), (1, 1, 1), (5, 0, 2)])
def test_counts_add_up_and_stay_within_one_of_the_exact_share(batch, ratio):
    weights = dict(zip(TASKS[:3], ratio, strict=True))
    try:
        counts = split_counts(batch, weights)
    except ValueError:
        # Only allowed when a weighted task's exact share is below one row.
        assert any(w and batch * w / sum(ratio) < 1 for w in ratio)
        return
    assert sum(counts.values()) == batch
    for task, w in weights.items():
        share = batch * w / sum(ratio)
        assert math.floor(share) <= counts[task] <= math.ceil(share)
        assert (counts[task] == 0) == (w == 0)


def test_leftover_rows_go_to_the_largest_remainder_then_the_earlier_task():
    # 10 × 2/4 = 5, 10 × 1/4 = 2.5 twice: one leftover row, tie broken towards text2pose.
    assert split_counts(10, {"image2pose": 2, "text2pose": 1, "vqa": 1}) == {
        "image2pose": 5,
        "text2pose": 3,
        "vqa": 2,
    }
    # 7 × 3/6 = 3.5, 7 × 2/6 = 2.33, 7 × 1/6 = 1.17: the leftover goes to image2pose (0.5).
    assert split_counts(7, {"image2pose": 3, "text2pose": 2, "vqa": 1}) == {
        "image2pose": 4,
        "text2pose": 2,
        "vqa": 1,
    }


def test_bad_ratios_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="unknown tasks"):
        split_counts(16, {"image2pose": 1, "person_crop": 1})
    with pytest.raises(ValueError, match="weight 0"):
        split_counts(16, {"image2pose": 0})
    with pytest.raises(ValueError, match=r"too small.*vqa"):
        split_counts(2, {"image2pose": 2, "text2pose": 1, "vqa": 1})


def test_every_batch_has_the_exact_composition_and_each_source_cycles_on_its_own():
    lengths = {"image2pose": 5, "text2pose": 3, "vqa": 7}
    mixer, streams = make_mixer(lengths, 8, {"image2pose": 2, "text2pose": 1, "vqa": 1})
    # Independent expectation: each task is an endless repetition of its rows.
    cycles = {t: itertools.cycle(streams[t].rows) for t in lengths}
    counts = {"image2pose": 4, "text2pose": 2, "vqa": 2}
    steps = 12
    for _ in range(steps):
        batch = mixer.next_batch()
        expected = [row for t in TASKS if t in counts for row in itertools.islice(cycles[t], counts[t])]
        assert [r["sample_id"] for r in batch] == [r["sample_id"] for r in expected]
        assert [r["task"] for r in batch] == ["image2pose"] * 4 + ["text2pose"] * 2 + ["vqa"] * 2
    # Each source opened as many epochs as its own consumption needs, no more.
    for task in counts:
        consumed = steps * counts[task]
        assert streams[task].opened == math.ceil(consumed / lengths[task])
        # Position: rows handed out in the current epoch (a just-finished epoch counts as full).
        assert mixer.state()[task] == SourcePosition(
            epoch=(consumed - 1) // lengths[task], position=(consumed - 1) % lengths[task] + 1
        )


def test_a_resumed_mixer_continues_where_the_saved_one_stopped():
    lengths = {"image2pose": 6, "text2pose": 4, "vqa": 5}
    ratio = {"image2pose": 2, "text2pose": 1, "vqa": 1}
    reference, _ = make_mixer(lengths, 8, ratio)
    whole = [[r["sample_id"] for r in reference.next_batch()] for _ in range(9)]

    first, _ = make_mixer(lengths, 8, ratio)
    for _ in range(5):
        first.next_batch()
    saved = first.state()
    resumed, streams = make_mixer(lengths, 8, ratio, starts=saved)
    rest = [[r["sample_id"] for r in resumed.next_batch()] for _ in range(4)]
    assert rest == whole[5:]
    assert resumed.state() == reference.state()
    # Resuming opened one epoch per source to skip into, never restarting a source from its beginning.
    assert all(s.opened >= 1 for s in streams.values())


def test_a_saved_position_past_the_end_starts_the_next_epoch():
    stream = CountingStream("text2pose", 3)
    source = CyclingSource("text2pose", stream, SourcePosition(epoch=2, position=10))
    rows = source.take(4)
    assert [r["sample_id"] for r in rows] == ["text2pose:0", "text2pose:1", "text2pose:2", "text2pose:0"]
    assert source.state() == SourcePosition(epoch=4, position=1)


def test_an_empty_stream_fails_naming_the_task():
    source = CyclingSource("vqa", CountingStream("vqa", 0))
    with pytest.raises(EmptySourceError, match="'vqa'"):
        source.take(1)


def test_tasks_with_weight_zero_are_not_read():
    mixer, _streams = make_mixer({"image2pose": 3}, 4, {"image2pose": 1, "text2pose": 0, "vqa": 0})
    assert [r["task"] for r in mixer.next_batch()] == ["image2pose"] * 4
    with pytest.raises(ValueError, match="no data source"):
        TaskMixer({}, {"vqa": 2})


def test_pose_input_tasks_join_the_mix_after_the_others():
    """The pose-input tasks come last in ``TASKS``: a ratio without them splits as before they existed."""
    assert TASKS[-3:] == ("pose2text", "posediff", "poseedit")
    old = {"image2pose": 2, "text2pose": 3, "vqa": 1, "spg": 1, "rpe": 1}
    assert split_counts(8, old) == {"image2pose": 2, "text2pose": 3, "vqa": 1, "spg": 1, "rpe": 1}
    counts = split_counts(24, {**old, "pose2text": 1, "poseedit": 2, "posediff": 1})
    assert counts == {**{t: 2 * w for t, w in old.items()}, "pose2text": 2, "posediff": 2, "poseedit": 4}
