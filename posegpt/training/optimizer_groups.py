"""AdamW parameter groups: the pretrained model's adapters, and the modules trained from scratch.

LoRA adapts weights that already work; the pose head, the pose encoder's projector and the pose
input encoder start from random (or mean-pose) weights and have everything to learn. LLaVA's own
training code gives its projector a learning rate of its own (``mm_projector_lr``) for the same
reason; ``optimizer.head_lr`` does that here. The LM's projector stays with the adapters: in the
7B/13B presets it is LLaVA's pretrained one.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from posegpt.training.config import OptimizerSection

FROM_SCRATCH = ("pose_head.", "pose_pathway.", "pose_input.")
"""Name prefixes, on ``PoseGPTModel``, of the modules trained from scratch."""


def parameter_groups(model: nn.Module, cfg: OptimizerSection) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` as AdamW groups, each with its peak ``lr``.

    One group at ``cfg.lr`` when ``cfg.head_lr`` is unset; otherwise the modules trained from
    scratch form a second group at ``cfg.head_lr``. Groups are named (``name``) for logs."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.head_lr is None:
        return [{"name": "all", "params": [p for _, p in named], "lr": cfg.lr}]
    scratch = [p for n, p in named if n.startswith(FROM_SCRATCH)]
    adapted = [p for n, p in named if not n.startswith(FROM_SCRATCH)]
    groups = [
        {"name": "adapters", "params": adapted, "lr": cfg.lr},
        {"name": "from_scratch", "params": scratch, "lr": cfg.head_lr},
    ]
    return [g for g in groups if g["params"]]
