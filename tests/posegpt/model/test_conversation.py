"""LLaVA-1.5 format and label masking, on the tiny tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from posegpt.model.config import LLAVA_V1_SYSTEM
from posegpt.model.conversation import IGNORE_INDEX, encode, normalize_messages, render

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MULTI_TURN = [
    {"role": "user", "content": "<image>\nWhat is the pose of the person in this image?"},
    {"role": "assistant", "content": "Here is the pose <POSE>."},
    {"role": "user", "content": "Describe the image."},
    {"role": "assistant", "content": "The person is waving with the left hand."},
    {"role": "user", "content": "Show two poses: sitting and running."},
    {"role": "assistant", "content": "First <POSE> then <POSE>."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_base_dir: Path):
    from posegpt.model.loading import add_pose_token, load_llava, load_processor

    processor = load_processor(tiny_base_dir)
    add_pose_token(load_llava(tiny_base_dir), processor.tokenizer, "<POSE>")
    return processor.tokenizer


def _encode(tokenizer, messages, *, has_image=True, generation=False, n_image=16):
    system, turns = normalize_messages(messages, has_image=has_image, where="test")
    rendered = render(
        turns,
        system=system or LLAVA_V1_SYSTEM,
        eos_token=tokenizer.eos_token,
        add_generation_prompt=generation,
    )
    return rendered, encode(
        tokenizer,
        rendered,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        num_image_tokens=n_image,
        pose_token_id=tokenizer.convert_tokens_to_ids("<POSE>"),
        where="test",
    )


def _runs(labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    current: list[int] = []
    for label in labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    if current:
        runs.append(current)
    return runs


def test_rendered_text_is_llava_v1_format() -> None:
    _, turns = normalize_messages(MULTI_TURN[:3], has_image=True, where="t")
    rendered = render(turns, system="SYS", eos_token="</s>", add_generation_prompt=True)
    assert rendered.text == (
        "SYS USER: <image>\nWhat is the pose of the person in this image? ASSISTANT: Here is the pose <POSE>.</s>"
        "USER: Describe the image. ASSISTANT:"
    )
    (start, end) = rendered.assistant_spans[0]
    assert rendered.text[start:end] == " Here is the pose <POSE>.</s>"


def test_unmasked_tokens_decode_to_exactly_the_assistant_turns(tokenizer) -> None:
    _, enc = _encode(tokenizer, MULTI_TURN)
    runs = _runs(enc.labels)
    answers = [m["content"] for m in MULTI_TURN if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in runs] == [f" {a}{tokenizer.eos_token}" for a in answers]
    # Every unmasked label is the input token at the same position (labels are not pre-shifted).
    for token, label in zip(enc.input_ids, enc.labels, strict=True):
        assert label in (IGNORE_INDEX, token)


def test_generation_prompt_is_the_training_prefix(tokenizer) -> None:
    """The prompt a user sends ends exactly where the labels of the answer begin."""
    _, train = _encode(tokenizer, MULTI_TURN[:2])
    _, prompt = _encode(tokenizer, MULTI_TURN[:1], generation=True)
    first_label = next(i for i, label in enumerate(train.labels) if label != IGNORE_INDEX)
    assert prompt.input_ids == train.input_ids[:first_label]


def test_image_placeholder_expands_to_vision_tokens(tokenizer) -> None:
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    _, enc = _encode(tokenizer, MULTI_TURN, n_image=16)
    assert enc.input_ids.count(image_id) == 16
    start, end = enc.image_span
    assert enc.input_ids[start:end] == [image_id] * 16
    assert all(label == IGNORE_INDEX for label in enc.labels[start:end])
    # The image goes first in the first user turn, even when the text did not name it.
    _, without = _encode(tokenizer, [{"role": "user", "content": "What is the pose?"}], generation=True)
    assert without.input_ids.count(image_id) == 16


def test_pose_positions_are_the_pose_tokens(tokenizer) -> None:
    _, enc = _encode(tokenizer, MULTI_TURN)
    pose_id = tokenizer.convert_tokens_to_ids("<POSE>")
    assert enc.pose_token_positions == [i for i, t in enumerate(enc.input_ids) if t == pose_id]
    assert len(enc.pose_token_positions) == 3


@pytest.mark.parametrize(
    ("messages", "has_image", "message"),
    [
        ([], False, "empty"),
        ([{"role": "assistant", "content": "hi"}], False, "alternate"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], False, "alternate"),
        ([{"role": "user", "content": "<image> <image>"}], True, "once"),
        ([{"role": "user", "content": "<image> look"}], False, "no image was given"),
        ([{"role": "user", "content": 3}], False, "must be a string"),
    ],
)
def test_bad_conversations_are_refused(messages, has_image, message) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_messages(messages, has_image=has_image, where="sample x")


def test_pose_token_in_a_user_turn_is_refused(tokenizer) -> None:
    with pytest.raises(ValueError, match="outside an assistant turn"):
        _encode(
            tokenizer, [{"role": "user", "content": "copy <POSE>"}, {"role": "assistant", "content": "ok"}]
        )
