"""The pose input encoder: what it reads, where its embeddings go, how it trains and is saved."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from posegpt.model.collate import Collator
from posegpt.model.pose_input import PoseInputEncoder, embedding_rms
from tests.fixtures.model import POSE_A, POSE_B, mixed_rows, pose_input_rows, torch_threads

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_model_config):
    from posegpt.model.posegpt_model import build_model

    torch.manual_seed(0)
    return build_model(tiny_model_config).eval()


def test_encoder_reads_rotations_not_axis_angle_numbers() -> None:
    """θ = π about x and θ = −π about x are one rotation: one embedding. 6D input, no wrap-around."""
    torch.manual_seed(0)
    encoder = PoseInputEncoder(32, num_tokens=2, embedding_rms=0.5)
    a = torch.zeros(1, 72)
    b = torch.zeros(1, 72)
    a[0, 3] = math.pi
    b[0, 3] = -math.pi
    out_a, out_b = encoder(a), encoder(b)
    assert out_a.shape == (1, 2, 32)
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=0)
    assert not torch.allclose(encoder(torch.zeros(1, 72)), out_a)
    # Output RMS per token starts at the LM's word-embedding RMS.
    rms = encoder(torch.randn(5, 72) * 0.5).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, 0.5), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r"\(Q, 72\)"):
        encoder(torch.zeros(3, 71))


def test_output_scale_matches_the_base_model_embeddings(model) -> None:
    words = model.llava.get_input_embeddings().weight[: model.pose_token_id]
    expected = embedding_rms(words)
    assert model.pose_input.norm.weight.detach().mean().item() == pytest.approx(expected, rel=1e-5)


def test_embeddings_replace_the_pose_input_positions_only(model) -> None:
    rows = [pose_input_rows()[2], mixed_rows(3)[2]]  # two pose inputs; an image row with answers
    batch = Collator.for_model(model)(rows)
    tokens = model.input_tokens(batch["input_ids"], batch["pose_inputs"])
    embeds = tokens["inputs_embeds"]
    plain = model.llava.get_input_embeddings()(batch["input_ids"])
    mask = batch["input_ids"] == model.pose_input_token_id
    torch.testing.assert_close(embeds[~mask], plain[~mask], atol=0, rtol=0)
    expected = model.pose_input(batch["pose_inputs"]).reshape(-1, embeds.shape[-1])
    torch.testing.assert_close(embeds[mask], expected, atol=0, rtol=0)
    # The image row's hidden states equal those of the same row alone (images still find their slots).
    with torch.no_grad():
        both, _ = model.encode(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            pose_pixel_values=batch.get("pose_pixel_values"),
            pose_inputs=batch["pose_inputs"],
        )
        alone_batch = Collator.for_model(model)(rows[1:])
        alone, _ = model.encode(
            alone_batch["input_ids"],
            alone_batch["attention_mask"],
            alone_batch["pixel_values"],
            pose_pixel_values=alone_batch.get("pose_pixel_values"),
        )
    n = alone.shape[1]
    torch.testing.assert_close(both[1, :n], alone[0], atol=1e-5, rtol=0)


def test_counts_that_do_not_match_are_refused(model) -> None:
    batch = Collator.for_model(model)([pose_input_rows()[2]])
    with pytest.raises(ValueError, match=r"2 <POSE_IN> positions but 1 pose inputs"):
        model.encode(batch["input_ids"], pose_inputs=batch["pose_inputs"][:1])
    with pytest.raises(ValueError, match="no pose inputs were given"):
        model.encode(batch["input_ids"])


def test_pose_loss_of_an_edit_trains_the_encoder(model) -> None:
    """poseedit: the answer's pose loss reaches the pose input encoder through the LM."""
    row = pose_input_rows()[0]  # "<POSE_IN> Raise the left arm." → <POSE> (poses: input A, target B)
    batch = Collator.for_model(model)([row])
    model.zero_grad(set_to_none=True)
    try:
        out = model(batch)
        assert out.n_poses == 1
        (out.pose_loss * 1.0).backward()
        assert model.pose_input.fc1.weight.grad.abs().sum() > 0
        np.testing.assert_array_equal(batch["pose_targets"][0].numpy(), POSE_B)
        np.testing.assert_array_equal(batch["pose_inputs"][0].numpy(), POSE_A)
    finally:
        model.zero_grad(set_to_none=True)


def test_batch_without_pose_inputs_gives_the_encoder_zero_gradients(model) -> None:
    batch = Collator.for_model(model)(mixed_rows(3))
    model.zero_grad(set_to_none=True)
    try:
        model(batch).loss.backward()
        for p in model.pose_input.parameters():
            assert p.grad is not None and p.grad.abs().sum() == 0
    finally:
        model.zero_grad(set_to_none=True)


def test_several_tokens_per_pose(tiny_model_config) -> None:
    from posegpt.model.posegpt_model import build_model

    cfg = dataclasses.replace(tiny_model_config, pose_input_tokens=3, lora_r=4, lora_alpha=8)
    torch.manual_seed(0)
    m = build_model(cfg)
    batch = Collator.for_model(m)([pose_input_rows()[2]])
    assert int((batch["input_ids"] == m.pose_input_token_id).sum()) == 6
    out = m(batch)
    assert torch.isfinite(out.loss)


def test_checkpoint_without_pose_inputs_loads_and_refuses_poses(tiny_model_config, tmp_path: Path) -> None:
    """A model saved with pose_input_tokens=0 (as every checkpoint before pose inputs) reads no poses."""
    from posegpt.model.checkpoint import POSE_INPUT_FILE, load_checkpoint, save_checkpoint
    from posegpt.model.posegpt_model import build_model

    cfg = dataclasses.replace(tiny_model_config, pose_input_tokens=0, lora_r=4, lora_alpha=8)
    with torch_threads(1):
        torch.manual_seed(0)
        path = save_checkpoint(build_model(cfg), tmp_path / "ckpt")
    assert not (path / POSE_INPUT_FILE).exists()
    # As an old checkpoint, whose config predates the field: the default (1) applies, the tokenizer decides.
    text = (path / "config.yaml").read_text().replace("pose_input_tokens: 0\n", "")
    (path / "config.yaml").write_text(text)
    loaded = load_checkpoint(path)
    assert loaded.pose_input is None and loaded.cfg.pose_input_tokens == 0
    with pytest.raises(ValueError, match="this model reads no poses"):
        Collator.for_model(loaded)([pose_input_rows()[0]])


def test_missing_pose_input_file_is_named(pose_input_checkpoint_dir: Path, tmp_path: Path) -> None:
    import shutil

    from posegpt.model.checkpoint import POSE_INPUT_FILE, load_checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(pose_input_checkpoint_dir, copy)
    (copy / POSE_INPUT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=POSE_INPUT_FILE):
        load_checkpoint(copy)
