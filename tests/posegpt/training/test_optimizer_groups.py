"""``optimizer.head_lr``: the modules trained from scratch get their own rate, scheduled like the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from posegpt.config import ConfigError, load_config
from posegpt.training.config import TrainConfig
from posegpt.training.deepspeed_config import deepspeed_config
from posegpt.training.optimizer_groups import parameter_groups

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "configs" / "train" / "tiny.yaml"


def test_groups_split_every_trainable_parameter_once(tiny_model_config) -> None:
    import dataclasses

    from posegpt.model.posegpt_model import build_model

    model = build_model(tiny_model_config)
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    cfg = load_config(TrainConfig, TINY, ["optimizer.lr=3e-4"]).optimizer

    (single,) = parameter_groups(model, dataclasses.replace(cfg, head_lr=None))
    assert single["lr"] == 3e-4 and {id(p) for p in single["params"]} == set(trainable)

    adapters, scratch = parameter_groups(model, dataclasses.replace(cfg, head_lr=1e-3))
    assert (adapters["lr"], scratch["lr"]) == (3e-4, 1e-3)
    ids = [id(p) for g in (adapters, scratch) for p in g["params"]]
    assert sorted(ids) == sorted(trainable)  # each parameter in exactly one group
    scratch_names = {trainable[id(p)] for p in scratch["params"]}
    adapter_names = {trainable[id(p)] for p in adapters["params"]}
    for prefix in ("pose_head.", "pose_pathway.", "pose_input."):
        assert any(n.startswith(prefix) for n in scratch_names), prefix
    assert all("lora_" in n or "embed" in n or "lm_head" in n or "projector" in n for n in adapter_names)
    assert any("lora_" in n for n in adapter_names)


def test_cosine_schedule_keeps_each_groups_own_peak() -> None:
    """DeepSpeed's WarmupCosineLR, built from the config block, scales each group's rate by one ratio."""
    import torch
    from deepspeed.runtime import lr_schedules

    cfg = load_config(
        TrainConfig, TINY, ["optimizer.lr=3e-4", "optimizer.head_lr=1.2e-3", "schedule.max_steps=20"]
    )
    ds = deepspeed_config(cfg, world_size=1, device="cpu", bf16_supported=False)
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW(
        [{"params": [a], "lr": cfg.optimizer.lr}, {"params": [b], "lr": cfg.optimizer.head_lr}]
    )
    scheduler = getattr(lr_schedules, ds["scheduler"]["type"])(optimizer, **ds["scheduler"]["params"])
    seen = []
    for _ in range(cfg.schedule.max_steps):
        scheduler.step()
        low, high = (g["lr"] for g in optimizer.param_groups)
        seen.append(high)
        assert high == pytest.approx(4 * low, rel=1e-9)
    assert 0.9 * 1.2e-3 < max(seen) <= 1.2e-3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.head_lr=1e-3", "schedule.decay=linear"],
            "optimizer.head_lr needs schedule.decay=cosine",
        ),
        (["optimizer.head_lr=0"], "optimizer.head_lr must be > 0"),
    ],
)
def test_head_lr_errors_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, TINY, overrides).validate()
