"""The llava-1.5-7b preset with its HMR 2.0 pathway, on a 7B-shaped random-weight model with one decoder layer.

Shapes of llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14 at 336 px: 576 tokens; Llama width 4096, 32 heads,
MLP 11008, 32064 embedding rows) and of HMR 2.0's ViT-H (width 1280, 16 heads, 256x192 input);
only the depths are cut (1 CLIP layer, 1 decoder layer, 1 ViT block). bf16 as the preset, on the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from posegpt.config import load_config
from posegpt.model.config import PoseGPTModelConfig
from tests.fixtures.model import png_bytes, torch_threads, write_hmr2_checkpoint
from tests.posegpt.model.test_gpu_smoke import LLAVA_7B_SHAPE

REPO = Path(__file__).resolve().parents[3]

# The GPU smoke test's llava-1.5-7b shape, one CLIP and one decoder layer.
LLAVA_7B_SHAPE_ONE_LAYER = dataclasses.replace(LLAVA_7B_SHAPE, vision_layers=1, text_layers=1)


@pytest.mark.slow
def test_llava_7b_preset_builds_with_the_hmr2_pathway(tmp_path: Path) -> None:
    from posegpt.model.collate import Collator
    from posegpt.model.posegpt_model import assemble
    from posegpt.model.tiny import BUILTIN_CORPUS, make_tiny_parts

    ckpt = tmp_path / "epoch=35-step=1000000.ckpt"
    write_hmr2_checkpoint(ckpt, embed_dim=1280, depth=1, heads=16)
    preset = load_config(PoseGPTModelConfig, REPO / "configs" / "model" / "llava-1.5-7b.yaml")
    assert preset.pose_encoder.kind == "hmr2_vit" and preset.pose_encoder.vit.embed_dim == 1280
    vit = dataclasses.replace(preset.pose_encoder.vit, depth=1)
    cfg = dataclasses.replace(
        preset,
        pose_encoder=dataclasses.replace(preset.pose_encoder, weights=str(ckpt), vit=vit),
        gradient_checkpointing=False,
        pose_head_init="identity",  # no shards here to take the preset's mean pose from
    )
    with torch_threads(2):
        torch.manual_seed(0)
        llava, processor = make_tiny_parts(BUILTIN_CORPUS, LLAVA_7B_SHAPE_ONE_LAYER)
        llava = llava.to(torch.bfloat16)
        model = assemble(llava, processor, cfg)
        assert model.num_image_tokens == 576 + 8 * 6 + 1
        assert model.pose_pathway.projector[0].weight.dtype == torch.bfloat16
        rows = [
            {
                "conversation": [
                    {"role": "user", "content": "<image>\nWhat is the pose of the person in this image?"},
                    {"role": "assistant", "content": "Here is the pose <POSE>."},
                ],
                "image": png_bytes(0, (300, 200)),
                "poses": [np.zeros(72, np.float32).tolist()],
            }
        ]
        batch = Collator.for_model(model)(rows)
        assert batch["pose_pixel_values"].shape == (1, 3, 256, 192)
        assert batch["pixel_values"].shape == (1, 3, 336, 336)
        model.train()
        out = model(batch)
        out.loss.backward()
    assert torch.isfinite(out.loss) and out.n_poses == 1
    grads = [p.grad for p in model.pose_pathway.projector.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
