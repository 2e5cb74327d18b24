"""PoseGPT checkpoint directories: save and load with bit-identical outputs.

Layout (DESIGN.md)::

    adapter/                 PEFT LoRA adapter (LoRA weights, <POSE> and <POSE_IN> rows, projector when trained)
    pose_head.safetensors    the SMPL head
    pose_input.safetensors   the pose input encoder (poses given in user turns; absent in checkpoints
                             made before pose inputs, which then read no poses)
    pose_projector.safetensors  the pose pathway's projector (only with a pose encoder; the frozen
                             encoder is read from ``pose_encoder.weights``, its sha256 checked)
    tokenizer/               the processor: tokenizer with <POSE>, image processor
    config.yaml              PoseGPTModelConfig, naming the base model

The base model is not copied: loading reads it from ``base_model`` (a local folder
or ``s3://``), adds the token rows and applies the adapter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from posegpt.config import dump_config, load_config
from posegpt.model.config import PoseGPTModelConfig
from posegpt.model.lora import peft_wrapping
from posegpt.model.pose_head import PoseHead
from posegpt.model.posegpt_model import PoseGPTModel, build_pose_pathway, enable_gradient_checkpointing
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.storage import StorageConfig, is_s3, materialize_dir

ADAPTER_DIR = "adapter"
POSE_HEAD_FILE = "pose_head.safetensors"
POSE_PROJECTOR_FILE = "pose_projector.safetensors"
POSE_INPUT_FILE = "pose_input.safetensors"
OPTIONAL_FILES: tuple[str, ...] = (POSE_PROJECTOR_FILE, POSE_INPUT_FILE)
"""Files a checkpoint holds only for some models (pose encoder, pose input encoder): copy them when present."""
TOKENIZER_DIR = "tokenizer"
CONFIG_FILE = "config.yaml"

REQUIRED_FILES: tuple[tuple[str, str], ...] = (
    (CONFIG_FILE, "the model config naming the base model"),
    (f"{ADAPTER_DIR}/adapter_config.json", "the LoRA adapter config"),
    (f"{ADAPTER_DIR}/adapter_model.safetensors", "the LoRA adapter weights"),
    (POSE_HEAD_FILE, "the SMPL head weights"),
    (f"{TOKENIZER_DIR}/tokenizer_config.json", "the tokenizer with <POSE>"),
)


def save_checkpoint(model: PoseGPTModel, out_dir: str | Path) -> Path:
    """Write ``model`` as a checkpoint directory (local path); returns it."""
    from safetensors.torch import save_file

    if not hasattr(model.lm, "peft_config"):
        raise ValueError(
            "only a LoRA-wrapped PoseGPT model can be saved as a checkpoint (build it with lora=True)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.lm.save_pretrained(out / ADAPTER_DIR, save_embedding_layers=False)
    state = {k: v.detach().contiguous().cpu() for k, v in model.pose_head.state_dict().items()}
    save_file(state, str(out / POSE_HEAD_FILE), metadata={"hidden_size": str(model.pose_head.hidden_size)})
    save_pose_projector(model, out)
    save_pose_input(model, out)
    model.processor.save_pretrained(out / TOKENIZER_DIR)
    cfg = model.cfg
    if not is_s3(cfg.base_model) and not Path(cfg.base_model).is_absolute():
        # A relative base path would resolve against whatever folder a later loader runs in.
        cfg = dataclasses.replace(cfg, base_model=str(Path(cfg.base_model).resolve()))
    dump_config(cfg, out / CONFIG_FILE)
    return out


def save_pose_projector(model: PoseGPTModel, out: Path) -> None:
    from safetensors.torch import save_file

    if model.pose_pathway is not None:
        projector = model.pose_pathway.projector.state_dict()
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in projector.items()}, str(out / POSE_PROJECTOR_FILE)
        )


def save_pose_input(model: PoseGPTModel, out: Path) -> None:
    from safetensors.torch import save_file

    if model.pose_input is not None:
        state = {k: v.detach().contiguous().cpu() for k, v in model.pose_input.state_dict().items()}
        meta = {
            "hidden_size": str(model.pose_input.hidden_size),
            "num_tokens": str(model.pose_input.num_tokens),
        }
        save_file(state, str(out / POSE_INPUT_FILE), metadata=meta)


def load_pose_input(cfg: PoseGPTModelConfig, hidden_size: int, local: Path, where: str) -> Any:
    """The pose input encoder saved in ``local`` (``cfg.pose_input_tokens`` > 0)."""
    from safetensors.torch import load_file

    from posegpt.model.posegpt_model import build_pose_input

    file = local / POSE_INPUT_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint {where} is missing {POSE_INPUT_FILE} (its tokenizer has {cfg.pose_input_token})"
        )
    encoder = build_pose_input(cfg, hidden_size)
    try:
        encoder.load_state_dict(load_file(str(file)), strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {where}: {POSE_INPUT_FILE} does not fit the model (pose_input_tokens="
            f"{cfg.pose_input_tokens}, hidden size {hidden_size}): {exc}"
        ) from exc
    return encoder


def load_pose_projector(pathway: Any, local: Path, where: str) -> None:
    from safetensors.torch import load_file

    file = local / POSE_PROJECTOR_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint {where} is missing {POSE_PROJECTOR_FILE} (its config names a pose encoder)"
        )
    try:
        pathway.projector.load_state_dict(load_file(str(file)), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {where}: {POSE_PROJECTOR_FILE} does not fit the model: {exc}") from exc


def check_checkpoint_dir(path: Path, where: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {where} is not a folder")
    for name, what in REQUIRED_FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {where} is missing {name} ({what})")


def load_checkpoint(
    path: str | Path,
    *,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    storage: StorageConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    trainable: bool = False,
    overrides: list[str] | None = None,
) -> PoseGPTModel:
    """A ``PoseGPTModel`` from a checkpoint folder or ``s3://`` prefix.

    ``trainable`` keeps the LoRA, token rows, head (and projector) trainable to resume
    training; otherwise the model is in eval mode with everything frozen.
    ``overrides`` are ``key=value`` settings of the saved model config (e.g. a new
    ``base_model`` location).
    """
    from peft import PeftModel
    from safetensors.torch import load_file

    from posegpt.model.loading import (
        load_llava,
        load_processor,
        pose_token_id,
        resize_for_tokenizer,
        resolve_base_dir,
    )

    local = materialize_dir(str(path), cache_dir, storage) if is_s3(str(path)) else Path(path)
    check_checkpoint_dir(local, str(path))
    extra = list(overrides or []) + ([f"dtype={dtype}"] if dtype else [])
    cfg = load_config(PoseGPTModelConfig, local / CONFIG_FILE, extra)
    processor = load_processor(local / TOKENIZER_DIR)
    pose_id = pose_token_id(processor.tokenizer, cfg.pose_token, f"checkpoint {path}")
    if cfg.pose_input_tokens and cfg.pose_input_token not in processor.tokenizer.get_vocab():
        # Saved before pose inputs existed: the model reads no poses.
        cfg = dataclasses.replace(cfg, pose_input_tokens=0)
    pose_input_id = (
        pose_token_id(processor.tokenizer, cfg.pose_input_token, f"checkpoint {path}")
        if cfg.pose_input_tokens
        else None
    )
    llava = load_llava(resolve_base_dir(cfg, cache_dir, storage), cfg.dtype, cfg.attn_implementation)
    # The <POSE> rows themselves come from the adapter (trainable tokens); this only makes room.
    resize_for_tokenizer(llava, len(processor.tokenizer))
    with peft_wrapping():
        lm: Any = PeftModel.from_pretrained(llava, local / ADAPTER_DIR, is_trainable=trainable)
    head = PoseHead(
        llava.config.text_config.hidden_size,
        input_norm=cfg.pose_head_input_norm,
        norm_momentum=cfg.pose_head_norm_momentum,
    )
    state = load_file(str(local / POSE_HEAD_FILE))
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {path}: {POSE_HEAD_FILE} does not fit the base model's hidden size or model.pose_head_input_norm: {exc}"
        ) from exc
    pathway, cfg = build_pose_pathway(cfg, llava.config.text_config.hidden_size, llava.dtype)
    if pathway is not None:
        load_pose_projector(pathway, local, str(path))
    hidden_size = llava.config.text_config.hidden_size
    pose_input = (
        load_pose_input(cfg, hidden_size, local, str(path)).to(llava.dtype) if cfg.pose_input_tokens else None
    )
    if trainable and cfg.gradient_checkpointing:
        enable_gradient_checkpointing(llava)
    model = PoseGPTModel(
        lm, head.to(llava.dtype), processor, cfg, pose_id, pathway, pose_input, pose_input_id
    ).to(device)
    if not trainable:
        model.eval()
        model.requires_grad_(False)
    return model
