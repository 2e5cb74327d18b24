"""Before any worker starts: does the checkpoint fit the base model it will run on?

A checkpoint holds only the LoRA adapter, the pose head and the tokenizer; the
base LLaVA is read from elsewhere. Loading an adapter trained on another base
fails deep inside PEFT (or, worse, loads and answers nonsense when only the layer
count differs). This check reads the base's ``config.json`` and the safetensors
*headers* of the adapter and the head (names and shapes only, a few kilobytes even
for a 13B checkpoint) and fails with a message naming both sides.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from posegpt.storage import StorageConfig, arrow_filesystem, exists, is_s3, join, read_bytes

_LAYER = re.compile(r"\.layers\.(\d+)\.")
# LoRA A matrices whose input is the decoder's hidden state.
_HIDDEN_INPUT = re.compile(r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.lora_A\.")


class CheckpointMismatch(ValueError):
    """The checkpoint was trained on a different base model."""


@dataclass
class CheckpointInfo:
    """What the driver learned about the checkpoint."""

    uri: str
    """The checkpoint as given (folder, ``s3://`` or ``models:/``)."""
    location: str
    """Where its files are: a local folder or an ``s3://`` prefix."""
    base_model: str
    """The base model it will run on."""
    config: dict[str, Any]
    """Its ``config.yaml``."""


def safetensors_header(uri: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, ``__metadata__``)."""
    fs, path = arrow_filesystem(uri, storage)
    with fs.open_input_file(path) as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{uri} is not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{uri} is not a safetensors file (header length {n})")
        return json.loads(f.read(n))


def check_checkpoint(
    uri: str, location: str, base_override: str | None, storage: StorageConfig | None = None
) -> CheckpointInfo:
    """Compare the checkpoint at ``location`` with its base model; raise ``CheckpointMismatch`` if they differ."""
    cfg_uri = join(location, "config.yaml")
    if not exists(cfg_uri, storage):
        raise FileNotFoundError(
            f"checkpoint {uri}: {cfg_uri} does not exist (not a PoseGPT checkpoint folder)"
        )
    config = yaml.safe_load(read_bytes(cfg_uri, storage)) or {}
    base = base_override or config.get("base_model")
    if not base:
        raise CheckpointMismatch(
            f"checkpoint {uri}: config.yaml names no base_model and the eval config gives none"
        )
    base_cfg_uri = join(str(base), "config.json")
    if not is_s3(str(base)) and not Path(str(base)).expanduser().is_dir():
        raise FileNotFoundError(f"base model {base} of checkpoint {uri} does not exist")
    if not exists(base_cfg_uri, storage):
        raise FileNotFoundError(f"base model {base}: {base_cfg_uri} is missing")
    base_json = json.loads(read_bytes(base_cfg_uri, storage))
    try:
        from transformers import LlavaConfig

        # llava-hf's config.json leaves out values equal to Llama's defaults (7B's hidden size): fill them in.
        text_cfg = LlavaConfig.from_dict(base_json).text_config
        hidden, layers = int(text_cfg.hidden_size), int(text_cfg.num_hidden_layers)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointMismatch(f"base model {base}: {base_cfg_uri} is not a LLaVA config ({exc})") from exc
    problems: list[str] = []

    head_uri = join(location, "pose_head.safetensors")
    if exists(head_uri, storage):
        meta = safetensors_header(head_uri, storage).get("__metadata__") or {}
        head_hidden = int(meta.get("hidden_size", 0) or 0)
        if hidden and head_hidden and head_hidden != hidden:
            problems.append(
                f"its pose head reads hidden states of size {head_hidden}, the base model's are {hidden}"
            )
    adapter_uri = join(location, "adapter", "adapter_model.safetensors")
    if exists(adapter_uri, storage):
        header = safetensors_header(adapter_uri, storage)
        deepest = max((int(m.group(1)) for k in header if (m := _LAYER.search(k))), default=-1)
        if layers and deepest >= layers:
            problems.append(f"its adapter adapts decoder layer {deepest}, the base model has {layers} layers")
        widths = {
            v["shape"][1]
            for k, v in header.items()
            if _HIDDEN_INPUT.search(k) and len(v.get("shape", [])) == 2
        }
        if hidden and widths and widths != {hidden}:
            problems.append(
                f"its LoRA matrices take inputs of size {sorted(widths)}, the base model's hidden size is {hidden}"
            )
    if problems:
        named = config.get("base_model")
        raise CheckpointMismatch(
            f"checkpoint {uri} does not match base model {base}"
            + (f" (it was trained on {named})" if named and named != base else "")
            + ": "
            + "; ".join(problems)
        )
    return CheckpointInfo(uri=uri, location=location, base_model=str(base), config=config)
