"""GPU smoke test: a llava-1.5-7b-shaped PoseGPT (random weights, 2 decoder layers) in bf16.

Shapes of llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px (24 layers, width 1024, 16
heads → 576 image tokens), Llama width 4096 with 32 heads and MLP 11008, 32064 embedding
rows; only the number of decoder layers is cut to 2. Prints the peak GPU memory.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from posegpt.model.config import PoseGPTModelConfig, TinyBaseConfig

LLAVA_7B_SHAPE = TinyBaseConfig(
    image_size=336,
    patch_size=14,
    vision_layers=24,
    vision_width=1024,
    vision_heads=16,
    text_layers=2,
    text_width=4096,
    text_heads=32,
    text_intermediate=11008,
    context_length=4096,
    vocab_size=2048,
    embedding_rows=32064,
)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (400, 300, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.gpu
@pytest.mark.slow
def test_llava_7b_shaped_forward_backward_bf16() -> None:
    from posegpt.model.collate import Collator
    from posegpt.model.lora import trainable_parameter_names
    from posegpt.model.posegpt_model import assemble
    from posegpt.model.tiny import BUILTIN_CORPUS, make_tiny_parts

    llava, processor = make_tiny_parts(BUILTIN_CORPUS, LLAVA_7B_SHAPE)
    llava = llava.to("cuda", torch.bfloat16)
    cfg = dataclasses.replace(PoseGPTModelConfig(), dtype="bfloat16", lora_r=128, lora_alpha=256)
    model = assemble(llava, processor, cfg).to("cuda")
    assert model.num_image_tokens == 576
    rows = [
        {
            "conversation": [
                {"role": "user", "content": "<image>\nWhat is the pose of the person in this image?"},
                {"role": "assistant", "content": "Here is the pose <POSE>."},
            ],
            "image": _png(0),
            "poses": [np.zeros(72, np.float32).tolist()],
        },
        {
            "conversation": [
                {"role": "user", "content": "Show me a person sitting."},
                {"role": "assistant", "content": "Sure, <POSE>."},
            ],
            "image": None,
            "poses": [(np.random.default_rng(0).normal(size=72) * 0.3).tolist()],
        },
        {  # a pose given as input (<POSE_IN>, the pose input encoder at width 4096) and edited
            "conversation": [
                {"role": "user", "content": "<POSE_IN> Raise the left arm."},
                {"role": "assistant", "content": "Sure, <POSE>."},
            ],
            "image": None,
            "poses": [np.zeros(72, np.float32).tolist(), np.full(72, 0.1, np.float32).tolist()],
        },
    ]
    batch = Collator.for_model(model)(rows)
    torch.cuda.reset_peak_memory_stats()
    model.train()
    out = model(batch)
    out.loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"llava-1.5-7b-shaped (2 layers) bf16 forward+backward: loss {out.loss.item():.3f}, peak {peak:.2f} GiB"
    )
    assert torch.isfinite(out.loss) and out.n_poses == 3
    assert batch["pose_inputs"].shape == (1, 72) and model.pose_input is not None
    assert llava.dtype == torch.bfloat16
    params = dict(model.named_parameters())
    for name in trainable_parameter_names(model):
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all(), name
    assert not any("vision_tower" in n for n in trainable_parameter_names(model))
