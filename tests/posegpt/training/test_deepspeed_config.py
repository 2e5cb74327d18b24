"""The DeepSpeed config written from the train config, and DeepSpeed accepting it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from posegpt.config import load_config
from posegpt.training.config import TrainConfig
from posegpt.training.deepspeed_config import deepspeed_config, resolve_precision

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "configs" / "train" / "tiny.yaml"
PAPER_7B = REPO / "configs" / "train" / "llava-1.5-7b.yaml"


def walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)
    else:
        yield value


def test_cpu_config_is_fp32_zero2_with_torch_adam_and_no_auto_values():
    cfg = load_config(TrainConfig, TINY, ["engine.grad_accumulation=3", "engine.grad_clip=0.5"])
    ds = deepspeed_config(cfg, world_size=2, device="cpu", bf16_supported=False)
    assert "auto" not in [v for v in walk(ds) if isinstance(v, str)]
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["bf16"] == {"enabled": False} and ds["fp16"] == {"enabled": False}
    assert ds["optimizer"]["type"] == "AdamW"
    assert ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["optimizer"]["params"]["lr"] == cfg.optimizer.lr
    assert ds["optimizer"]["params"]["betas"] == list(cfg.optimizer.betas)
    assert ds["train_micro_batch_size_per_gpu"] == cfg.data.batch_size_per_worker
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == cfg.data.batch_size_per_worker * 3 * 2
    assert ds["gradient_clipping"] == 0.5
    assert ds["scheduler"]["type"] == "WarmupCosineLR"
    assert ds["scheduler"]["params"]["total_num_steps"] == cfg.schedule.max_steps
    assert ds["scheduler"]["params"]["warmup_num_steps"] == cfg.schedule.warmup_steps


def test_gpu_config_of_the_paper_preset_is_bf16_zero2_with_fused_adam():
    cfg = load_config(TrainConfig, PAPER_7B)
    ds = deepspeed_config(cfg, world_size=8, device="cuda", bf16_supported=True)
    assert ds["bf16"] == {"enabled": True}
    assert ds["optimizer"]["params"]["torch_adam"] is False
    assert ds["optimizer"]["params"]["weight_decay"] == 0.0
    assert ds["train_batch_size"] == 16 * 2 * 8
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["overlap_comm"] is True


def test_precision_resolution():
    assert resolve_precision("auto", "cpu", bf16_supported=True) == "fp32"
    assert resolve_precision("bf16", "cpu", bf16_supported=True) == "fp32"
    assert resolve_precision("auto", "cuda", bf16_supported=True) == "bf16"
    assert resolve_precision("auto", "cuda", bf16_supported=False) == "fp32"
    with pytest.raises(ValueError, match="does not support bf16"):
        resolve_precision("bf16", "cuda", bf16_supported=False)


def test_zero3_and_the_other_schedules():
    cfg = load_config(
        TrainConfig,
        TINY,
        # DeepSpeed's linear and constant schedules take one rate for all groups (no head_lr).
        ["engine.zero_stage=3", "schedule.decay=linear", "schedule.warmup_steps=0", "optimizer.head_lr=null"],
    )
    ds = deepspeed_config(cfg, world_size=1, device="cpu", bf16_supported=False)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["scheduler"]["type"] == "WarmupDecayLR"
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 1
    cfg = load_config(TrainConfig, TINY, ["schedule.decay=constant", "optimizer.head_lr=null"])
    assert deepspeed_config(cfg, 1, "cpu", False)["scheduler"]["type"] == "WarmupLR"


@pytest.mark.slow
def test_deepspeed_schedule_from_the_config_warms_up_then_decays():
    """DeepSpeed's own scheduler class, built from the config block the engine would read."""
    import torch
    from deepspeed.runtime import lr_schedules

    cfg = load_config(
        TrainConfig,
        TINY,
        [
            "optimizer.lr=0.01",
            "schedule.max_steps=8",
            "schedule.warmup_steps=3",
            "schedule.warmup_start_ratio=0.1",
            "schedule.min_lr_ratio=0.2",
            "engine.grad_accumulation=2",
            "data.batch_size_per_worker=12",  # the tiny mix needs a row for each of its seven tasks
        ],
    )
    ds = deepspeed_config(cfg, world_size=1, device="cpu", bf16_supported=False)
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=ds["optimizer"]["params"]["lr"])
    scheduler = getattr(lr_schedules, ds["scheduler"]["type"])(optimizer, **ds["scheduler"]["params"])
    scheduler.step()  # as the training loop does: DeepSpeed's schedulers start one iteration early (lr 0)
    lrs = []
    for _ in range(cfg.schedule.max_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Independent schedule: linear warm-up from 0.1·lr over 3 steps, then cosine down to 0.2·lr,
    # reached at the last step (DeepSpeed counts the first decay step as one step into the cosine).
    lr, expected = 0.01, []
    for s in range(8):
        if s < 3:
            ratio = 0.1 + (1 - 0.1) * s / 3
        else:
            progress = (s - 3 + 1) / (8 - 3)
            ratio = 0.2 + (1 - 0.2) * 0.5 * (1 + math.cos(math.pi * progress))
        expected.append(lr * ratio)
    assert expected[-1] == pytest.approx(0.2 * lr)
    assert lrs == pytest.approx(expected, rel=1e-6)
