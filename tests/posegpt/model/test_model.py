"""PoseGPTModel: loss against an independent computation, pose read-out position, LoRA scope."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from posegpt.model.collate import Collator
from posegpt.model.lora import check_targets, trainable_parameter_names
from posegpt.model.pose_head import PoseHead
from tests.fixtures.model import mixed_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_model_config):
    from posegpt.model.posegpt_model import build_model

    torch.manual_seed(0)
    m = build_model(tiny_model_config)
    # LoRA B starts at zero; give it values so that the adapter changes the outputs.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    return m.eval()


def gram_schmidt(x: np.ndarray) -> np.ndarray:
    """Independent 6D → R (float64): columns from the two 3-vectors."""
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def test_loss_matches_an_independent_computation(model) -> None:
    rows = mixed_rows(6)
    batch = Collator.for_model(model)(rows)
    with torch.no_grad():
        out = model(batch)
        # Independent path: the plain HF forward (full logits, all hidden states); the pose encoder's
        # tokens go in through transformers' precomputed image-features input.
        images = {"pixel_values": batch["pixel_values"]}
        if model.pose_pathway is not None:
            features = model.image_features(batch["pixel_values"], batch["pose_pixel_values"])
            images = {"mm_encoder_outputs": {"image": features}}
        ref = model.lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
            **images,
        )
    logits = ref.logits.double().numpy()
    labels = batch["labels"].numpy()
    nll = []
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[b, t + 1] != -100:
                row = logits[b, t]
                nll.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[labels[b, t + 1]])
    ce = float(np.mean(nll))

    # The pose of a <POSE> is read at the position before it: find them from the token ids.
    ids = batch["input_ids"].numpy()
    last = ref.hidden_states[-1]
    states = [
        last[b, t - 1]
        for b in range(ids.shape[0])
        for t in range(ids.shape[1])
        if ids[b, t] == model.pose_token_id
    ]
    with torch.no_grad():
        six = model.pose_head(torch.stack(states)).double().numpy()
    pred = gram_schmidt(six)
    targets = np.concatenate([np.asarray(r["poses"], np.float64) for r in rows if r["poses"]])
    true = Rotation.from_rotvec(targets.reshape(-1, 3)).as_matrix().reshape(-1, 24, 3, 3)
    l1 = float(np.abs(pred - true).mean())

    cfg = model.cfg
    assert out.n_text_tokens == len(nll) and out.n_poses == len(states) == 6
    assert out.text_loss.item() == pytest.approx(ce, rel=1e-4)
    assert out.pose_loss.item() == pytest.approx(l1, rel=1e-4)
    assert out.loss.item() == pytest.approx(cfg.lambda_text * ce + cfg.lambda_pose * l1, rel=1e-4)
    np.testing.assert_allclose(out.pred_rotmats.numpy(), pred, atol=1e-5)


def test_pose_head_starts_at_identity_or_mean_pose() -> None:
    hidden = torch.randn(5, 32)
    head = PoseHead(32, init_std=0.0)
    eye = torch.eye(3).expand(5, 24, 3, 3)
    torch.testing.assert_close(head.rotmats(hidden), eye)
    small = PoseHead(32)  # default small weights: every joint near (not at) the identity
    assert (small.rotmats(hidden) - eye).abs().max() < 0.05
    mean = np.random.default_rng(0).normal(size=72) * 0.5
    head = PoseHead(32, init="mean", mean_pose=mean.tolist(), init_std=0.0)
    expected = Rotation.from_rotvec(mean.reshape(24, 3)).as_matrix()
    np.testing.assert_allclose(head.rotmats(hidden)[0].detach().numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="72"):
        PoseHead(32, init="mean", mean_pose=[0.0] * 3)


def test_lora_adapts_only_the_language_model(model) -> None:
    names = [name for name, _ in model.named_modules()]
    lora = [n for n in names if n.endswith("lora_A")]
    assert lora and all(".language_model." in n for n in lora)
    assert not [n for n in names if "vision_tower" in n and "lora" in n]
    layers = model.llava.config.text_config.num_hidden_layers
    assert len(lora) == layers * 7  # q, k, v, o, gate, up, down in every decoder layer


def test_a_list_style_target_would_reach_the_vision_tower(model) -> None:
    with pytest.raises(ValueError, match="vision tower"):
        check_targets(model.llava, r".*(q_proj|v_proj)")
    with pytest.raises(ValueError, match="matches no module"):
        check_targets(model.llava, r".*language_model.*\.nothing")


@pytest.mark.parametrize("root_weight", [1.0, 8.0, 0.0])
def test_root_weight_of_the_pose_loss(model, root_weight) -> None:
    rng = np.random.default_rng(5)
    pred = torch.from_numpy(rng.normal(size=(3, 24, 3, 3)))
    target = torch.from_numpy(rng.normal(size=(3, 24, 3, 3)))
    per_joint = np.abs(pred.numpy() - target.numpy()).mean(axis=(2, 3))  # (3, 24)
    weights = np.ones(24)
    weights[0] = root_weight
    expected = float(((per_joint * weights).sum(axis=1) / weights.sum()).mean())
    old = model.cfg.pose_loss_root_weight
    try:
        model.cfg.pose_loss_root_weight = root_weight
        assert model.rotation_l1(pred, target).item() == pytest.approx(expected, rel=1e-9)
    finally:
        model.cfg.pose_loss_root_weight = old
    if root_weight == 1.0:  # the plain mean over the 24 × 9 entries
        assert expected == pytest.approx(float(np.abs(pred.numpy() - target.numpy()).mean()), rel=1e-9)


def test_trainable_parameter_set(model, tiny_model_config) -> None:
    names = trainable_parameter_names(model)
    groups = {
        "lora": [n for n in names if ".lora_A." in n or ".lora_B." in n],
        "tokens": [n for n in names if "trainable_tokens_delta" in n],
        "projector": [n for n in names if "multi_modal_projector.modules_to_save" in n],
        "head": [n for n in names if n.startswith("pose_head.")],
        "pose projector": [n for n in names if n.startswith("pose_pathway.projector.")],
        "pose input": [n for n in names if n.startswith("pose_input.")],
    }
    assert sorted(n for group in groups.values() for n in group) == sorted(names)  # nothing else is trainable
    assert (
        len(groups["tokens"]) == 2
    )  # the <POSE> and <POSE_IN> rows of the input embedding and of the LM head
    assert {n.split(".token_adapter")[0].rsplit(".", 1)[-1] for n in groups["tokens"]} == {
        "embed_tokens",
        "lm_head",
    }
    assert len(groups["projector"]) == 4 and tiny_model_config.train_projector
    assert len(groups["head"]) == 4
    assert len(groups["pose input"]) == 5  # two linear layers and the output scale
    assert len(groups["pose projector"]) == (4 if tiny_model_config.pose_encoder.enabled else 0)
    assert not any("vision_tower" in n or "pose_pathway.encoder" in n for n in names)
    for name in groups["tokens"]:
        assert dict(model.named_parameters())[name].shape[0] == 2


def test_projector_frozen_without_the_flag(tiny_model_config) -> None:
    from posegpt.model.posegpt_model import build_model

    cfg = dataclasses.replace(tiny_model_config, train_projector=False, lora_r=4, lora_alpha=8)
    names = trainable_parameter_names(build_model(cfg))
    assert not any("multi_modal_projector" in n for n in names)
    assert any("lora_A" in n for n in names)


def test_gradients_reach_exactly_the_trainable_parts(model) -> None:
    batch = Collator.for_model(model)(mixed_rows(3))
    model.zero_grad(set_to_none=True)
    model(batch).loss.backward()
    params = dict(model.named_parameters())
    try:
        for name, p in params.items():
            if p.requires_grad:
                assert p.grad is not None, name
            else:
                assert p.grad is None, name
        deltas = [p for n, p in params.items() if "trainable_tokens_delta" in n]
        assert all(d.grad.abs().sum() > 0 for d in deltas)
        assert params["pose_head.fc2.bias"].grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)


def test_batch_without_poses_gives_zero_pose_loss_and_zero_head_grads(model) -> None:
    rows = [r for r in mixed_rows(6) if not r["poses"]]
    batch = Collator.for_model(model)(rows)
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out.loss.backward()
    assert out.n_poses == 0 and out.pose_loss.item() == 0.0
    assert out.loss.item() == pytest.approx(model.cfg.lambda_text * out.text_loss.item())
    assert torch.count_nonzero(model.pose_head.fc1.weight.grad) == 0
    model.zero_grad(set_to_none=True)
