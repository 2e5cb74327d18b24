"""PEFT LoRA on the language model only, plus the new token rows and (optionally) the projector.

* LoRA targets are a regex over full module names: CLIP's attention layers carry
  the same short names (``q_proj``, ``v_proj``, ...) as Llama's, so a list of names
  would adapt the vision tower too.
* The ``<POSE>`` rows of the input embedding and of the LM head are trained through
  PEFT's ``trainable_token_indices``: only those rows are parameters (a 7B model's
  32k × 4096 embedding gets no optimizer state), and they are saved with the adapter.
* ``train_projector`` puts the multimodal projector in ``modules_to_save``, so its
  trained copy lives in the adapter as well. The vision tower is always frozen.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from posegpt.model.config import PoseGPTModelConfig

VISION_PREFIXES = ("vision_tower",)
PROJECTOR = "multi_modal_projector"


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Silence the one deprecation warning PEFT 0.21 triggers on every wrap under transformers 5
    (it reads ``is_gradient_checkpointing``); nothing for a user to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def lora_config(cfg: PoseGPTModelConfig, new_token_ids: Sequence[int], *, inference: bool = False) -> Any:
    from peft import LoraConfig

    ids = [int(i) for i in new_token_ids]
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target,
        bias="none",
        trainable_token_indices={"embed_tokens": ids, "lm_head": ids},
        modules_to_save=[PROJECTOR] if cfg.train_projector else None,
        inference_mode=inference,
    )


def check_targets(llava: nn.Module, pattern: str) -> list[str]:
    """Module names the LoRA regex selects; refuses a regex that reaches the vision tower or selects nothing."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"model.lora_target is not a valid regex: {exc}") from exc
    names = [name for name, module in llava.named_modules() if regex.fullmatch(name)]
    vision = [n for n in names if any(f"{p}." in f"{n}." for p in VISION_PREFIXES)]
    if vision:
        raise ValueError(f"model.lora_target {pattern!r} matches vision tower modules, e.g. {vision[:3]}")
    if PROJECTOR in {n.rsplit(".", 1)[-1] for n in names}:
        raise ValueError(
            f"model.lora_target {pattern!r} matches the projector; use model.train_projector instead"
        )
    if not names:
        raise ValueError(f"model.lora_target {pattern!r} matches no module of the language model")
    return names


def apply_lora(llava: nn.Module, cfg: PoseGPTModelConfig, new_token_ids: Sequence[int]) -> Any:
    """Wrap ``llava`` in a trainable ``PeftModel``; every base weight stays frozen."""
    from peft import get_peft_model

    check_targets(llava, cfg.lora_target)
    with peft_wrapping():
        model = get_peft_model(llava, lora_config(cfg, new_token_ids))
    assert_vision_frozen(model)
    return model


def assert_vision_frozen(model: nn.Module) -> None:
    """No trainable parameter and no LoRA layer inside the vision tower."""
    for name, param in model.named_parameters():
        if "vision_tower." in name and (param.requires_grad or "lora_" in name):
            raise RuntimeError(f"vision tower parameter {name} is adapted or trainable")


def trainable_parameter_names(model: nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]
