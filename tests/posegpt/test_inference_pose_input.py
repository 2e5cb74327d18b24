"""Poses as input in generation: cached decoding equals teacher forcing with a pose in the history,
batching, feeding an answered pose back, bad poses named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posegpt.inference import GenerationSettings, PoseGPT, Query
from tests.fixtures.model import POSE_A, POSE_B, POSE_C, POSE_INPUT_SAMPLES, POSING_SAMPLES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def posegpt(pose_input_checkpoint_dir) -> PoseGPT:
    return PoseGPT.from_checkpoint(pose_input_checkpoint_dir)


def sample_query(i: int) -> Query:
    """The trained conversation ``i`` of ``POSE_INPUT_SAMPLES`` as a query, with its input poses."""
    sample = POSE_INPUT_SAMPLES[i]
    turns = sample["turns"]
    messages = [{"role": "user" if j % 2 == 0 else "assistant", "content": t} for j, t in enumerate(turns)]
    n_out = sum(t.count("<POSE>") for t in turns[1::2])
    n_in = sum(t.count("<POSE_IN>") for t in turns[0::2])
    # poses are in conversation order; the history's answered poses are not inputs.
    slots = []
    for j, t in enumerate(turns):
        slots += [j % 2 == 0] * (t.count("<POSE_IN>") if j % 2 == 0 else t.count("<POSE>"))
    inputs = [p for p, is_input in zip(sample["poses"], slots, strict=False) if is_input]
    assert len(inputs) == n_in and len(slots) == n_in + n_out
    return Query(messages, poses=inputs)


def test_trained_pose_input_conversations_give_their_answers(posegpt: PoseGPT) -> None:
    for i, sample in enumerate(POSE_INPUT_SAMPLES):
        answer = posegpt.batch([sample_query(i)], max_new_tokens=24)[0]
        assert answer.text == sample["answer"]
        assert answer.poses.shape[0] == sample["answer"].count("<POSE>")
    # The edit's answer follows its input: the model learned A -> B, C in the history -> C.
    edit = posegpt.batch([sample_query(0)], max_new_tokens=24)[0].poses[0]
    assert np.abs(edit - POSE_B).mean() < np.abs(edit - POSE_A).mean()


def test_the_input_pose_changes_the_answer(posegpt: PoseGPT) -> None:
    """Same text, another pose: the encoder's embeddings reach the answer (not a constant placeholder)."""
    query = sample_query(0)
    base = posegpt.batch([query], max_new_tokens=24)[0]
    other = posegpt.batch([Query(query.messages, poses=[POSE_C])], max_new_tokens=24)[0]
    assert base.poses.shape == other.poses.shape == (1, 72)
    assert not np.allclose(base.poses, other.poses, atol=1e-3)


def test_cached_generation_equals_teacher_forcing_with_a_pose_in_the_history(posegpt: PoseGPT) -> None:
    model = posegpt.model
    for i in (0, 3):
        query = sample_query(i)
        gen = posegpt.generate([query], GenerationSettings(max_new_tokens=12), record_states=True)[0]
        assert gen.pose_states, "the trained edit answers with a pose"
        ids = torch.tensor([gen.prompt_ids + gen.token_ids])
        with torch.no_grad():
            hidden, _ = model.encode(
                ids, torch.ones_like(ids), pose_inputs=torch.tensor(np.stack(query.poses))
            )
        start = len(gen.prompt_ids) - 1
        forced = hidden[0, start : start + len(gen.step_states)]
        torch.testing.assert_close(torch.stack(gen.step_states), forced, atol=1e-4, rtol=0)
        positions = [len(gen.prompt_ids) + k for k, t in enumerate(gen.token_ids) if t == posegpt.pose_id]
        forced_poses = model.pose_head.rotmats(hidden[0, [p - 1 for p in positions]])
        cached_poses = model.pose_head.rotmats(torch.stack(gen.pose_states))
        torch.testing.assert_close(cached_poses, forced_poses, atol=1e-4, rtol=0)


def test_batched_equals_one_by_one_with_pose_inputs(posegpt: PoseGPT) -> None:
    queries = [
        sample_query(0),
        Query(POSING_SAMPLES[0]["prompt"]),
        sample_query(2),
        sample_query(3),
        sample_query(1),
    ]
    together = posegpt.batch(queries, max_new_tokens=16)
    for query, batched in zip(queries, together, strict=True):
        alone = posegpt.batch([query], max_new_tokens=16)[0]
        assert batched.text == alone.text
        np.testing.assert_allclose(batched.poses, alone.poses, atol=1e-4)


def test_an_answered_pose_feeds_back_as_the_next_input(posegpt: PoseGPT) -> None:
    first = posegpt.chat(POSING_SAMPLES[0]["prompt"], max_new_tokens=24)
    assert first.poses.shape == (1, 72)
    history = [
        {"role": "user", "content": POSING_SAMPLES[0]["prompt"]},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "<POSE_IN> Raise the left arm."},
    ]
    edited = posegpt.chat(history, poses=[first.poses[0]], max_new_tokens=24)
    assert edited.text == "Here is the pose <POSE>."
    assert edited.poses.shape == (1, 72)
    # Equal to passing the same pose as a plain array (the fed-back pose is an ordinary input).
    again = posegpt.chat(history, poses=np.asarray(first.poses[:1], np.float64), max_new_tokens=24)
    np.testing.assert_allclose(again.poses, edited.poses, atol=1e-5)


@pytest.mark.parametrize(
    ("poses", "message"),
    [
        (None, r"holds 1 <POSE_IN> but 0 poses"),
        ([POSE_A, POSE_B], r"holds 1 <POSE_IN> but 2 poses"),
        ([POSE_A[:70]], r"poses\[0\] has shape \(70,\)"),
        ([np.where(np.arange(72) == 5, np.nan, POSE_A)], r"poses\[0\] has non-finite"),
        ([np.full(72, 4.0)], r"poses\[0\] joint 0 rotates by 6.93 rad"),
    ],
)
def test_bad_pose_inputs_are_named(posegpt: PoseGPT, poses, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        posegpt.chat("<POSE_IN> Raise the left arm.", poses=poses)


def test_a_pose_input_in_an_assistant_turn_is_refused(posegpt: PoseGPT) -> None:
    history = [
        {"role": "user", "content": "Show me."},
        {"role": "assistant", "content": "<POSE_IN>"},
        {"role": "user", "content": "Again."},
    ]
    with pytest.raises(ValueError, match="assistant turn"):
        posegpt.chat(history, poses=[POSE_A])
