"""Template phrasings and seeded picks."""

from __future__ import annotations

import pytest

from posegpt.data.templates import (
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


def test_chatpose_preset_uses_the_released_wording() -> None:
    from posegpt.data.templates import CHATPOSE_ANSWERS, CHATPOSE_TEXT_QUESTIONS, template_set

    chatpose = template_set("chatpose")
    conv, ids = expand("text2pose", "The person kneels.", "posescript:7", 3, preset="chatpose")
    q = int(ids["question"].rsplit("/", 1)[1])
    assert ids["question"].startswith("chatpose:text2pose/")
    assert conv[0]["content"] == CHATPOSE_TEXT_QUESTIONS[q].format(caption="The person kneels.")
    assert conv[1]["content"] in {a.format(pose="<POSE>") for a in CHATPOSE_ANSWERS}
    # The benchmark prompt of the reasoning tasks, verbatim: description without its full stop.
    conv, _ = expand("rpe", "The man is about to sit down.", "rpe:1", 0, preset="chatpose")
    assert conv == [
        {
            "role": "user",
            "content": "<image>\nThe man is about to sit down, can you give the SMPL pose of this person?",
        },
        {"role": "assistant", "content": "Sure, it is <POSE>."},
    ]
    conv, _ = expand("spg", "A person proposing marriage", "spg:1", 0, preset="chatpose")
    assert conv[0]["content"] == "A person proposing marriage, can you give the SMPL pose of this person?"
    conv, _ = expand("image2pose", None, "3dpw:1", 0, preset="chatpose")
    assert (
        conv[0]["content"].startswith("<image>\n")
        and conv[0]["content"][8:] in chatpose.questions["image2pose"]
    )
    with pytest.raises(ValueError, match="unknown template preset 'paper'"):
        expand("text2pose", "x.", "s:1", 0, preset="paper")


def test_default_preset_picks_did_not_change() -> None:
    # Shards written before presets existed must be reproduced exactly: same pools, same draws, same ids.
    for i in range(50):
        sid = f"posescript:{i}"
        rng = sample_rng(0, sid)
        q, a = rng.randrange(len(TEXT_QUESTIONS)), rng.randrange(len(ANSWERS))
        conv, ids = expand("text2pose", "A.", sid, 0)
        assert ids == {"question": f"text2pose/{q}", "answer": f"answer/{a}"}
        assert conv[1]["content"] == ANSWERS[a].format(pose="<POSE>")


@pytest.mark.parametrize("preset", ["posegpt", "chatpose"])
def test_variants_give_distinct_phrasings_on_training_rows_only(preset: str) -> None:
    from posegpt.data.templates import TemplateConfig, expand_variants, template_set

    cfg = TemplateConfig(preset=preset, variants=4)
    rows = expand_variants("text2pose", "The person kneels.", "posescript:7", 0, cfg, "train")
    assert [r[0] for r in rows] == [f"posescript:7:{v}" for v in range(4)]
    questions = [r[1][0]["content"] for r in rows]
    assert len(set(questions)) == 4, "four variants must not repeat a question"
    assert all(r[2]["variant"] == str(v) for v, r in enumerate(rows))
    assert rows == expand_variants("text2pose", "The person kneels.", "posescript:7", 0, cfg, "train")
    # Test rows keep one phrasing and the plain id (a retrieval gallery must not hold duplicates).
    (test_row,) = expand_variants("text2pose", "The person kneels.", "posescript:7", 0, cfg, "test")
    assert test_row[0] == "posescript:7"
    assert (test_row[1], test_row[2]) == expand("text2pose", "The person kneels.", "posescript:7", 0, preset)
    # More variants than distinct (question, answer) pairs: every pair once, none twice.
    t = template_set(preset)
    n_pairs = len(t.questions["spg"]) * len(t.answers_for("spg"))
    many = expand_variants("spg", "A person waving.", "spg:1", 0, TemplateConfig(preset, 1000), "train")
    pairs = [(r[2]["question"], r[2]["answer"]) for r in many]
    assert len(pairs) == n_pairs == len(set(pairs))


def test_template_config_validation() -> None:
    from posegpt.data.templates import TemplateConfig

    TemplateConfig().validate()
    with pytest.raises(ValueError, match=r"templates\.preset 'x'"):
        TemplateConfig(preset="x").validate()
    with pytest.raises(ValueError, match="variants must be >= 1"):
        TemplateConfig(variants=0).validate()


def test_all_template_text_of_several_presets() -> None:
    from posegpt.data.templates import CHATPOSE_IMAGE_QUESTIONS

    both = all_template_text(("posegpt", "chatpose"))
    assert set(all_template_text()) < set(both)
    assert CHATPOSE_IMAGE_QUESTIONS[0] in both and all("{" not in t for t in both)
