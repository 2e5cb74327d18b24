"""The DeepSpeed config, written in code from the typed train config.

Every value is concrete (no ``"auto"``): DeepSpeed's ``auto`` is resolved by the
Hugging Face integration, which this project does not go through, and a concrete
config is what a reader of the MLflow run needs to reproduce a step.
"""

from __future__ import annotations

from typing import Any, Literal

from posegpt.training.config import TrainConfig

Precision = Literal["bf16", "fp32"]
Device = Literal["cpu", "cuda"]

NEVER_PRINT = 10**12
"""``steps_per_print`` that keeps DeepSpeed's own step log quiet: metrics go to MLflow."""


def resolve_precision(requested: str, device: Device, bf16_supported: bool) -> Precision:
    """``auto`` → bf16 on a GPU that supports it, else fp32; CPU always trains in fp32."""
    if requested not in ("auto", "bf16", "fp32"):
        raise ValueError(f"engine.precision must be auto, bf16 or fp32, got {requested!r}")
    if device == "cpu":
        return "fp32"
    if requested == "auto":
        return "bf16" if bf16_supported else "fp32"
    if requested == "bf16" and not bf16_supported:
        raise ValueError("engine.precision=bf16 but this GPU does not support bf16; use auto or fp32")
    return requested  # type: ignore[return-value]


def scheduler_config(cfg: TrainConfig) -> dict[str, Any]:
    """DeepSpeed scheduler block: linear warm-up, then cosine, linear or no decay."""
    sched = cfg.schedule
    # DeepSpeed's schedulers need at least one warm-up step.
    warmup = max(1, min(sched.warmup_steps, sched.max_steps))
    lr = cfg.optimizer.lr
    if sched.decay == "cosine":
        return {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": sched.max_steps,
                "warmup_num_steps": warmup,
                "warmup_min_ratio": sched.warmup_start_ratio,
                "cos_min_ratio": sched.min_lr_ratio,
                "warmup_type": "linear",
            },
        }
    params = {
        "warmup_min_lr": lr * sched.warmup_start_ratio,
        "warmup_max_lr": lr,
        "warmup_num_steps": warmup,
        "warmup_type": "linear",
    }
    if sched.decay == "linear":
        return {"type": "WarmupDecayLR", "params": {"total_num_steps": sched.max_steps, **params}}
    return {"type": "WarmupLR", "params": params}


def deepspeed_config(
    cfg: TrainConfig, world_size: int, device: Device, bf16_supported: bool
) -> dict[str, Any]:
    """The full DeepSpeed config dict for ``deepspeed.initialize(config=...)``."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    precision = resolve_precision(cfg.engine.precision, device, bf16_supported)
    micro = cfg.data.batch_size_per_worker
    accum = cfg.engine.grad_accumulation
    zero: dict[str, Any] = {"stage": cfg.engine.zero_stage}
    if cfg.engine.zero_stage >= 2:
        # Overlap and contiguous gradients only pay off with CUDA streams; on CPU they add copies.
        zero.update(
            {
                "overlap_comm": device == "cuda",
                "contiguous_gradients": device == "cuda",
                "reduce_scatter": True,
            }
        )
    if cfg.engine.zero_stage == 3:
        # Gather the full weights when saving so the model checkpoint stays a plain state dict.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world_size,
        "gradient_clipping": cfg.engine.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.optimizer.lr,
                "betas": list(cfg.optimizer.betas),
                "eps": cfg.optimizer.eps,
                "weight_decay": cfg.optimizer.weight_decay,
                # FusedAdam needs CUDA; on CPU use torch's AdamW instead of compiling CPUAdam.
                "torch_adam": device == "cpu",
            },
        },
        "scheduler": scheduler_config(cfg),
        "steps_per_print": NEVER_PRINT,
        "wall_clock_breakdown": False,
    }
