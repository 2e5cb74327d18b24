"""Shard rows → batches: mixed image / text rows, pose positions, bad rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posegpt.model.collate import Collator
from posegpt.model.conversation import IGNORE_INDEX
from tests.fixtures.model import mixed_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_model_config):
    from posegpt.model.posegpt_model import build_model

    torch.manual_seed(0)
    return build_model(tiny_model_config).eval()


@pytest.fixture(scope="module")
def collator(model) -> Collator:
    return Collator.for_model(model)


def test_mixed_batch_layout(model, collator) -> None:
    rows = mixed_rows()
    batch = collator(rows)
    with_image = [r for r in rows if r["image"] is not None]
    assert batch["pixel_values"].shape == (len(with_image), 3, 64, 64)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    for i, row in enumerate(rows):
        n_img = int((ids[i] == model.image_token_id).sum())
        assert n_img == (model.num_image_tokens if row["image"] is not None else 0)
        length = int(mask[i].sum())
        assert mask[i, :length].all() and not mask[i, length:].any()  # right padding
        assert (labels[i, length:] == IGNORE_INDEX).all()
    # Every pose index points at the position right before a <POSE>, in row order.
    index = batch["pose_index"]
    assert index.shape == (sum(len(r["poses"] or []) for r in rows), 2)
    assert (ids[index[:, 0], index[:, 1] + 1] == model.pose_token_id).all()
    assert index[:, 0].tolist() == sorted(index[:, 0].tolist())
    expected = np.concatenate([np.asarray(r["poses"], np.float32) for r in rows if r["poses"]])
    np.testing.assert_array_equal(batch["pose_targets"].numpy(), expected)


def test_mixed_batch_gives_each_row_its_own_image(model, collator) -> None:
    """Hidden states of a mixed batch equal those of each row run alone (images land on their rows)."""
    rows = mixed_rows(4)
    batch = collator(rows)
    with torch.no_grad():
        hidden, _ = model.encode(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("pixel_values"),
            pose_pixel_values=batch.get("pose_pixel_values"),
        )
        for i, row in enumerate(rows):
            single = collator([row])
            alone, _ = model.encode(
                single["input_ids"],
                single["attention_mask"],
                single.get("pixel_values"),
                pose_pixel_values=single.get("pose_pixel_values"),
            )
            n = alone.shape[1]
            torch.testing.assert_close(hidden[i, :n], alone[0], atol=1e-5, rtol=1e-4)


def test_column_batch_equals_row_list(collator) -> None:
    rows = mixed_rows(3)
    columns = {key: np.array([r[key] for r in rows], dtype=object) for key in rows[0]}
    a, b = collator(rows), collator(columns)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_truncation_drops_poses_past_the_cut(model) -> None:
    row = {
        "sample_id": "long",
        "conversation": [
            {"role": "user", "content": "Show two poses: sitting and running."},
            {"role": "assistant", "content": "First <POSE> then" + " very" * 40 + " <POSE>."},
        ],
        "image": None,
        "poses": [[0.0] * 72, [0.1] * 72],
    }
    full = Collator.for_model(model)([row])
    second = int(full["pose_index"][1, 1])
    short = Collator.for_model(model)
    short.max_length = second
    batch = short([row])
    assert batch["input_ids"].shape[1] == second
    assert batch["pose_index"].shape == (1, 2)
    np.testing.assert_array_equal(batch["pose_targets"].numpy(), np.zeros((1, 72), np.float32))


def test_truncation_never_cuts_an_image(model) -> None:
    collator = Collator.for_model(model)
    collator.max_length = 20
    with pytest.raises(ValueError, match="image tokens"):
        collator([mixed_rows(1)[0]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": b"not an image"}, r"sample t:0: field image: not a readable image"),
        (
            {"poses": None},
            r"sample t:0: the conversation has 0 <POSE_IN> and 2 <POSE> tokens but field poses holds 0",
        ),
        ({"poses": [[0.0] * 71]}, r"sample t:0: field poses: poses\[0\] has 71 values"),
        ({"poses": [[float("nan")] * 72]}, r"sample t:0: field poses: poses\[0\] holds NaN"),
    ],
)
def test_bad_rows_name_the_sample_and_field(collator, change, message) -> None:
    row = mixed_rows(3)[2] | {"sample_id": "t:0"}
    row.update(change)
    with pytest.raises(ValueError, match=message):
        collator([row])


def test_rows_encoded_apart_stack_to_the_batch_of_all_images(model, collator) -> None:
    """``encode_row`` prepares each image alone; stacked, the pixels equal those of one processor call."""
    from posegpt.model.vision_input import decode_image, image_inputs

    rows = mixed_rows(5)
    batch = collator.stack([collator.encode_row(row, i) for i, row in enumerate(rows)])
    images = [decode_image(r["image"], "test") for r in rows if r["image"] is not None]
    expected = image_inputs(model.processor.image_processor, images, model.cfg.pose_encoder)
    assert set(expected) <= set(batch)
    for key, value in expected.items():
        assert batch[key].dtype == torch.float32
        torch.testing.assert_close(batch[key], value, rtol=0, atol=1e-6)
    assert collator.encode_row(rows[1], 1).pixels == {}  # a text-only row carries no pixels


def test_pose_inputs_and_targets_are_split_in_conversation_order(model, collator) -> None:
    """``poses`` lists inputs and answers in text order; inputs go to ``pose_inputs``, answers stay targets."""
    from tests.fixtures.model import pose_input_rows

    rows = [mixed_rows(3)[2], *pose_input_rows()]
    batch = collator(rows)
    n = model.cfg.pose_input_tokens
    expected_inputs, expected_targets = [], []
    for row in rows:
        poses = list(row["poses"] or [])
        k = 0
        for turn in row["conversation"]:
            marker = "<POSE_IN>" if turn["role"] == "user" else "<POSE>"
            for _ in range(turn["content"].count(marker)):
                (expected_inputs if turn["role"] == "user" else expected_targets).append(poses[k])
                k += 1
        assert k == len(poses)
    np.testing.assert_array_equal(batch["pose_inputs"].numpy(), np.asarray(expected_inputs, np.float32))
    np.testing.assert_array_equal(batch["pose_targets"].numpy(), np.asarray(expected_targets, np.float32))
    # Each input's block: n <POSE_IN> ids from its index, no label; every <POSE_IN> id belongs to a block.
    ids = batch["input_ids"]
    for row, start in batch["pose_input_index"].tolist():
        assert (ids[row, start : start + n] == model.pose_input_token_id).all()
        assert (batch["labels"][row, start : start + n] == IGNORE_INDEX).all()
    assert int((ids == model.pose_input_token_id).sum()) == n * len(expected_inputs)


def test_truncation_drops_pose_inputs_past_the_cut(model) -> None:
    from posegpt.model.collate import Collator
    from tests.fixtures.model import pose_input_rows

    row = pose_input_rows()[2]  # "How does pose <POSE_IN> differ from pose <POSE_IN>?"
    full = Collator.for_model(model).encode_row(row)
    first, second = full.encoded.pose_input_positions
    short = Collator.for_model(model)
    short.max_length = second  # cut just before the second pose's block
    enc = short.encode_row(row)
    assert enc.encoded.pose_input_positions == [first]
    assert len(enc.pose_inputs) == 1
    np.testing.assert_array_equal(enc.pose_inputs[0], np.asarray(row["poses"][0], np.float32))


def test_pose_input_counts_must_match(collator) -> None:
    from tests.fixtures.model import pose_input_rows

    row = pose_input_rows()[2]
    row["poses"] = row["poses"][:1]
    with pytest.raises(
        ValueError, match=r"pose-input:2: the conversation has 2 <POSE_IN> and 0 <POSE> tokens"
    ):
        collator([row])
