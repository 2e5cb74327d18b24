"""Pose-input tasks: templates put ``<POSE_IN>`` in questions, rows hold input poses first, validation counts both."""

from __future__ import annotations

import json

import numpy as np
import pytest

from posegpt.data.schema import POSE_INPUT_TOKEN, POSE_TOKEN, empty_row, validate_row
from posegpt.data.templates import (
    ANSWERS,
    POSE_TASKS,
    POSEDIFF_QUESTIONS,
    TemplateConfig,
    all_template_text,
    expand,
    expand_variants,
)


def _row(task: str, conversation: list[dict[str, str]], n_poses: int) -> dict:
    rng = np.random.default_rng(0)
    poses = [list(rng.normal(0, 0.2, 72)) for _ in range(n_poses)]
    return empty_row(
        sample_id=f"x:{task}",
        task=task,
        source="s",
        split="train",
        conversation=conversation,
        poses=poses,
        meta=json.dumps({}),
    )


@pytest.mark.parametrize(
    ("task", "inputs", "outputs"), [("pose2text", 1, 0), ("posediff", 2, 0), ("poseedit", 1, 1)]
)
def test_expanded_rows_hold_the_pose_tokens_the_task_needs(task, inputs, outputs) -> None:
    text = "Raise the left arm above the head."
    for seed in range(20):
        conv, ids = expand(task, text, f"pf:{seed}", seed)
        assert conv[0]["content"].count(POSE_INPUT_TOKEN) == inputs
        assert conv[1]["content"].count(POSE_TOKEN) == outputs
        assert POSE_INPUT_TOKEN not in conv[1]["content"]
        assert validate_row(_row(task, conv, inputs + outputs)) is None
        # One pose too few or too many is named.
        assert "poses" in validate_row(_row(task, conv, inputs + outputs + 1))
        if task == "poseedit":
            assert text in conv[0]["content"] or text[0].lower() + text[1:] in conv[0]["content"]
            assert conv[1]["content"] in {a.format(pose=POSE_TOKEN) for a in ANSWERS}
        else:
            # The answer is the caption or modifier itself, what BLEU/ROUGE compare against.
            assert conv[1]["content"] == text and ids["answer"] == f"{task}-answer/0"


def test_posediff_questions_name_pose_a_before_pose_b() -> None:
    for q in POSEDIFF_QUESTIONS:
        assert q.index("{pose_a}") < q.index("{pose_b}")


def test_validation_rejects_misplaced_or_missing_input_tokens() -> None:
    conv = [{"role": "user", "content": "Describe it."}, {"role": "assistant", "content": "Arms up."}]
    assert "needs 1 <POSE_IN>" in validate_row(_row("pose2text", conv, 1))
    conv = [
        {"role": "user", "content": "Describe it."},
        {"role": "assistant", "content": f"{POSE_INPUT_TOKEN}"},
    ]
    assert "(assistant) holds <POSE_IN>" in validate_row(_row("pose2text", conv, 1))
    # A multi-turn chat: describe, then edit; poses in conversation order (input, then the answer).
    conv = [
        {"role": "user", "content": f"Describe {POSE_INPUT_TOKEN}"},
        {"role": "assistant", "content": "Arms up."},
        {"role": "user", "content": "Now lower the left arm."},
        {"role": "assistant", "content": f"Here it is {POSE_TOKEN}."},
    ]
    assert validate_row(_row("poseedit", conv, 2)) is None


def test_existing_draws_and_corpus_do_not_change() -> None:
    # The pose-answer tasks draw from the same pools in the same way as before these tasks existed.
    conv, ids = expand("text2pose", "The person kneels.", "posescript:7", 3)
    assert conv[1]["content"] in {a.format(pose=POSE_TOKEN) for a in ANSWERS}
    assert ids["answer"].startswith("answer/")
    default = all_template_text()
    assert not any(POSE_INPUT_TOKEN in t for t in default)
    wider = all_template_text(tasks=(*POSE_TASKS, "pose2text", "posediff", "poseedit"))
    assert set(default) < set(wider) and any(POSE_INPUT_TOKEN in t for t in wider)
    assert "" not in wider and all("{" not in t for t in wider)


def test_variants_of_pose_input_tasks_are_distinct() -> None:
    rows = expand_variants("posediff", "Bend the knees.", "pf:1", 0, TemplateConfig(variants=3), "train")
    assert len({r[1][0]["content"] for r in rows}) == 3
