"""The pose encoder: HMR 2.0's released checkpoint format, the feature path into the LM, the shipped tiny weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posegpt.config import load_config
from posegpt.vision.config import PoseEncoderConfig, VitShape
from posegpt.vision.pose_encoder import PoseEncoder, file_sha256
from tests.fixtures.model import mixed_rows, torch_threads, write_hmr2_checkpoint

REPO = Path(__file__).resolve().parents[3]
SMALL_VIT = VitShape(embed_dim=32, depth=2, num_heads=4, patch_size=16, mlp_ratio=4.0)


def hmr2_config(weights: Path, **changes) -> PoseEncoderConfig:
    cfg = PoseEncoderConfig(
        kind="hmr2_vit", weights=str(weights), input_height=256, input_width=192, pool=2, vit=SMALL_VIT
    )
    return dataclasses.replace(cfg, **changes)


def reference_vit(state: dict, x: torch.Tensor, heads: int) -> torch.Tensor:
    """HMR 2.0's ViT forward as written in 4D-Humans (vit.py), with explicit attention: (B, C, Hp, Wp)."""
    feat = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=16, padding=2)
    b, c, hp, wp = feat.shape
    t = feat.flatten(2).transpose(1, 2)
    t = t + state["pos_embed"][:, 1:] + state["pos_embed"][:, :1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        p = {k.removeprefix(f"blocks.{i}."): v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(t, (c,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        qkv = (h @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]).reshape(b, -1, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        o = (attn @ v).transpose(1, 2).reshape(b, -1, c)
        t = t + o @ p["attn.proj.weight"].T + p["attn.proj.bias"]
        h = F.layer_norm(t, (c,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        h = F.gelu(h @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
        t = t + h @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    t = F.layer_norm(t, (c,), state["last_norm.weight"], state["last_norm.bias"], eps=1e-6)
    return t.permute(0, 2, 1).reshape(b, c, hp, wp)


def test_hmr2_checkpoint_in_the_released_format_loads_and_matches_4d_humans_forward(tmp_path: Path) -> None:
    ckpt = tmp_path / "epoch=35-step=1000000.ckpt"
    backbone = write_hmr2_checkpoint(ckpt, embed_dim=32, depth=2, heads=4)
    encoder = PoseEncoder(hmr2_config(ckpt)).eval()
    digest = encoder.load_weights()
    assert digest == file_sha256(ckpt)
    loaded = encoder.net.state_dict()
    assert set(loaded) == set(backbone)  # every backbone key, nothing of the other heads
    for key, value in backbone.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        grid, _ = encoder.features(x)
        tokens = encoder(x)
    expected = reference_vit(backbone, x, heads=4)
    assert grid.shape == (2, 32, 16, 12)
    torch.testing.assert_close(grid, expected, rtol=1e-4, atol=1e-5)
    pooled = F.avg_pool2d(expected, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens[:, :-1], pooled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tokens[:, -1], expected.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    assert encoder.num_tokens == 8 * 6 + 1


def test_a_changed_or_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "hmr2.ckpt"
    write_hmr2_checkpoint(ckpt, embed_dim=32, depth=2, heads=4)
    with pytest.raises(ValueError, match="sha256"):
        PoseEncoder(hmr2_config(ckpt, sha256="0" * 64)).load_weights()
    with pytest.raises(ValueError, match="does not fit"):
        PoseEncoder(hmr2_config(ckpt, vit=dataclasses.replace(SMALL_VIT, depth=3))).load_weights()
    torch.save({"state_dict": {"head.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="no 'backbone"):
        PoseEncoder(hmr2_config(tmp_path / "other.ckpt")).load_weights()
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        PoseEncoder(hmr2_config(tmp_path / "missing.ckpt")).load_weights()


@pytest.mark.parametrize("mode", ["append", "replace"])
def test_pose_features_reach_the_lm_at_the_image_placeholder(tmp_path: Path, tiny_model_config, mode) -> None:
    from posegpt.model.collate import Collator
    from posegpt.model.posegpt_model import build_model

    ckpt = tmp_path / "hmr2.ckpt"
    backbone = write_hmr2_checkpoint(ckpt, embed_dim=32, depth=2, heads=4)
    cfg = dataclasses.replace(tiny_model_config, pose_encoder=hmr2_config(ckpt, mode=mode))
    with torch_threads(1):
        torch.manual_seed(0)
        model = build_model(cfg)
        clip_tokens = 16  # 64 px / 16 px patches, CLS dropped ("default" feature select)
        assert model.num_image_tokens == (clip_tokens if mode == "append" else 0) + 8 * 6 + 1
        batch = Collator.for_model(model)(mixed_rows(3))
        assert ("pixel_values" in batch) == (mode == "append")
        captured = {}

        def grab(module, args, kwargs):
            captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

        lm = model.llava.model.language_model
        handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
        out = model(batch)
        handle.remove()
        out.loss.backward()
        # Independent: 4D-Humans' forward, pooled, the mean token, then the pathway's projector.
        grid = reference_vit(backbone, batch["pose_pixel_values"], heads=4)
        feats = torch.cat(
            [F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2), grid.mean(dim=(2, 3))[:, None]], 1
        )
        with torch.no_grad():
            expected = model.pose_pathway.projector(feats)
        image_rows = [i for i, r in enumerate(mixed_rows(3)) if r["image"] is not None]
        for k, row in enumerate(image_rows):
            positions = (batch["input_ids"][row] == model.image_token_id).nonzero().flatten()
            assert len(positions) == model.num_image_tokens
            pose_positions = positions[-expected.shape[1] :]
            torch.testing.assert_close(
                captured["embeds"][row, pose_positions], expected[k], rtol=1e-4, atol=1e-5
            )
        projector_grads = [p.grad for p in model.pose_pathway.projector.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in projector_grads)
        assert all(p.grad is None and not p.requires_grad for p in model.pose_pathway.encoder.parameters())


def test_shipped_tiny_encoder_matches_its_provenance() -> None:
    from posegpt.model.config import PoseGPTModelConfig
    from posegpt.vision.pretrain import PoseEncoderPretrainConfig

    model_cfg = load_config(PoseGPTModelConfig, REPO / "configs" / "model" / "tiny.yaml")
    enc_cfg = model_cfg.pose_encoder
    weights = REPO / enc_cfg.weights
    provenance = json.loads(weights.with_suffix(weights.suffix + ".json").read_text())
    assert provenance["sha256"] == file_sha256(weights)
    assert provenance["bytes"] == weights.stat().st_size < 10 * 2**20  # small enough to ship in git
    assert provenance["job"] == "jobs/pretrain_pose_encoder.py"
    # The recorded config is the preset `make pose-encoder` runs, so remaking gives the same recipe.
    preset = load_config(PoseEncoderPretrainConfig, REPO / "configs" / "pose_encoder" / "tiny.yaml")
    assert provenance["config"] == json.loads(json.dumps(dataclasses.asdict(preset)))
    # Never trained on the demo's world (nor any of its splits).
    demo_world = load_config_yaml(REPO / "configs" / "synth" / "medium.yaml")["seed"]
    assert provenance["data"]["world_seed"] != demo_world
    metrics = provenance["metrics"]
    assert metrics["val_pa_mpjpe_vs_mean_pose"] == pytest.approx(
        metrics["val_pa_mpjpe_mm"] / metrics["mean_pose_pa_mpjpe_mm"]
    )
    assert metrics["val_pa_mpjpe_vs_mean_pose"] < 0.8
    encoder = PoseEncoder(dataclasses.replace(enc_cfg, sha256=provenance["sha256"]))
    assert encoder.load_weights() == provenance["sha256"]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        tokens = encoder.eval()(x)
    assert tokens.shape == (2, encoder.num_tokens, encoder.width) and torch.isfinite(tokens).all()


def load_config_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
