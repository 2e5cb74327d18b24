"""Merge a PoseGPT checkpoint into a standalone Hugging Face folder.

The output loads with plain ``transformers`` (``LlavaForConditionalGeneration``
and ``AutoProcessor``): LoRA deltas, the trained ``<POSE>`` rows and the projector
are folded into the weights. The SMPL head lies beside them as
``pose_head.safetensors`` with ``posegpt.yaml`` (the model config and the
``<POSE>`` id), since transformers has no place for it; so does the pose pathway's
projector when the model has a pose encoder (its frozen weights stay where the config names), and the
pose input encoder (``pose_input.safetensors``) when the model reads poses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from safetensors.torch import save_file

from posegpt.config import to_dict
from posegpt.model.checkpoint import (
    POSE_HEAD_FILE,
    POSE_INPUT_FILE,
    load_checkpoint,
    save_pose_input,
    save_pose_projector,
)
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.storage import StorageConfig

EXPORT_INFO_FILE = "posegpt.yaml"


def export_merged(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    storage: StorageConfig | None = None,
) -> Path:
    """Write the merged model of ``checkpoint`` to ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"export folder {out} is not empty")
    model = load_checkpoint(checkpoint, cache_dir=cache_dir, storage=storage, dtype=dtype)
    out.mkdir(parents=True, exist_ok=True)
    merged = model.lm.merge_and_unload()
    merged.save_pretrained(out)
    model.processor.save_pretrained(out)
    state = {k: v.detach().contiguous().cpu() for k, v in model.pose_head.state_dict().items()}
    save_file(state, str(out / POSE_HEAD_FILE), metadata={"hidden_size": str(model.pose_head.hidden_size)})
    save_pose_projector(model, out)
    save_pose_input(model, out)
    cfg = dataclasses.replace(model.cfg, base_model=str(out.resolve()), build_tiny_if_missing=False)
    info = {
        "pose_token": cfg.pose_token,
        "pose_token_id": model.pose_token_id,
        "pose_head": POSE_HEAD_FILE,
        "pose_input_token_id": model.pose_input_token_id,
        "pose_input": POSE_INPUT_FILE if model.pose_input is not None else None,
        "source_checkpoint": str(checkpoint),
        "model": to_dict(cfg),
    }
    (out / EXPORT_INFO_FILE).write_text(yaml.safe_dump(info, sort_keys=False))
    return out
