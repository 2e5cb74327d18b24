"""Template phrasings and seeded picks."""

from __future__ import annotations

import pytest

from posegpt.templates import (
    ANSWERS,
    IMAGE_QUESTIONS,
    RPE_QUESTIONS,
    SPG_QUESTIONS,
    TEXT_QUESTIONS,
    all_template_text,
    expand,
    sample_rng,
    stable_hash,
    vqa_conversation,
)


def test_pools_are_large_and_answers_hold_one_pose_token() -> None:
    assert len(set(IMAGE_QUESTIONS)) >= 5
    assert len(set(TEXT_QUESTIONS)) >= 9
    assert len(set(ANSWERS)) >= 8
    assert SPG_QUESTIONS and RPE_QUESTIONS
    for answer in ANSWERS:
        assert answer.format(pose="<POSE>").count("<POSE>") == 1


def test_expansion_is_seeded_per_sample_and_recorded() -> None:
    a = expand("text2pose", "The person kneels.", "posescript:7", seed=3)
    b = expand("text2pose", "The person kneels.", "posescript:7", seed=3)
    assert a == b
    conv, ids = a
    assert [t["role"] for t in conv] == ["user", "assistant"]
    assert "kneels" in conv[0]["content"] and conv[1]["content"].count("<POSE>") == 1
    q = int(ids["question"].split("/")[1])
    assert ids["question"].startswith("text2pose/") and 0 <= q < len(TEXT_QUESTIONS)
    # The pick is random.Random(seed + stable hash of the id): same as drawing it directly.
    rng = sample_rng(3, "posescript:7")
    assert q == rng.randrange(len(TEXT_QUESTIONS))
    assert stable_hash("posescript:7") == stable_hash("posescript:7") > 0


def test_picks_vary_across_samples_and_seeds() -> None:
    picks = {expand("text2pose", "x.", f"posescript:{i}", 0)[1]["question"] for i in range(200)}
    assert len(picks) == len(TEXT_QUESTIONS)
    answers = {expand("image2pose", None, f"s:{i}", 0)[1]["answer"] for i in range(200)}
    assert len(answers) == len(ANSWERS)
    seeds = [expand("text2pose", "x.", "posescript:1", s)[1]["question"] for s in range(30)]
    assert len(set(seeds)) > 1


def test_image_tasks_put_the_marker_first() -> None:
    for task in ("image2pose", "rpe"):
        conv, _ = expand(task, "the person on the left.", "s:1", 0)
        assert conv[0]["content"].startswith("<image>\n") and conv[0]["content"].count("<image>") == 1
    conv, _ = expand("spg", "A person proposing marriage.", "s:1", 0)
    assert "<image>" not in conv[0]["content"] and "proposing marriage" in conv[0]["content"]
    with pytest.raises(ValueError, match="non-empty"):
        expand("spg", " ", "s:1", 0)


def test_vqa_passes_turns_through() -> None:
    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A dog."}]
    assert vqa_conversation(turns) == [
        {"role": "user", "content": "<image>\nWhat?"},
        {"role": "assistant", "content": "A dog."},
    ]
    with pytest.raises(ValueError, match="unknown speaker"):
        vqa_conversation([{"from": "bot", "value": "x"}])


def test_all_template_text_covers_every_pool() -> None:
    texts = all_template_text()
    assert len(texts) == len(IMAGE_QUESTIONS) + len(TEXT_QUESTIONS) + len(SPG_QUESTIONS) + len(
        RPE_QUESTIONS
    ) + len(ANSWERS)
    assert all("{" not in t for t in texts)
