"""Read a LLaVA checkpoint directory (local or ``s3://``) and add the ``<POSE>`` token.

Only local files are ever read (``local_files_only=True``): a name such as
``llava-hf/llava-1.5-7b-hf`` that is not a folder fails with a clear error instead
of reaching for a hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from posegpt.model.config import PoseGPTModelConfig
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.storage import StorageConfig, is_s3, materialize_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_base_dir(
    cfg: PoseGPTModelConfig, cache_dir: str | Path = DEFAULT_CACHE_DIR, storage: StorageConfig | None = None
) -> Path:
    """A local folder holding ``cfg.base_model``: built (tiny preset), mirrored from S3, or the path itself."""
    uri = cfg.base_model
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if cfg.build_tiny_if_missing:
            from posegpt.model.tiny import ensure_tiny_base

            ensure_tiny_base(path, cfg.tiny)
        if not path.is_dir():
            raise FileNotFoundError(
                f"base model folder {uri} does not exist (model.base_model must be a local LLaVA checkpoint "
                "directory or an s3:// prefix; nothing is downloaded from a hub)"
            )
    path = materialize_dir(uri, cache_dir, storage)
    check_base_dir(path)
    return path


def check_base_dir(path: Path) -> None:
    """Fail with the missing file's name when ``path`` is not a llava-hf style folder."""
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint directory: {config} is missing")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise FileNotFoundError(f"{path} holds no weights (*.safetensors or *.bin)")
    if not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{path} holds no tokenizer: {path / 'tokenizer_config.json'} is missing")


def load_llava(path: Path, dtype: str = "float32", attn_implementation: str = "sdpa") -> Any:
    """``LlavaForConditionalGeneration`` from a local folder, in eval mode with every weight frozen."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig.from_pretrained(path, local_files_only=True)
    if config.model_type != "llava":
        raise ValueError(
            f"{path}/config.json has model_type {config.model_type!r}; expected a 'llava' checkpoint"
        )
    model = LlavaForConditionalGeneration.from_pretrained(
        path, dtype=DTYPES[dtype], attn_implementation=attn_implementation, local_files_only=True
    )
    model.eval()
    model.requires_grad_(False)
    return model


def load_processor(path: Path) -> Any:
    """The ``LlavaProcessor`` (tokenizer + CLIP image processor) saved in ``path``."""
    from transformers import AutoProcessor

    if not (path / "processor_config.json").is_file() and not (path / "preprocessor_config.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no image processor (processor_config.json / preprocessor_config.json)"
        )
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ValueError(
            f"{path}: expected a LLaVA processor with a tokenizer and an image processor, got {type(processor).__name__}"
        )
    return processor


def pose_token_id(tokenizer: Any, pose_token: str, where: str) -> int:
    """Id of ``pose_token``; a clear error when the tokenizer does not know it as one token."""
    ids = tokenizer.encode(pose_token, add_special_tokens=False)
    vocab = tokenizer.get_vocab()
    if pose_token not in vocab or len(ids) != 1:
        raise ValueError(
            f"the tokenizer of {where} has no {pose_token} special token (checkpoint saved without it?)"
        )
    return int(vocab[pose_token])


def add_pose_token(model: Any, tokenizer: Any, pose_token: str) -> int:
    """Add ``pose_token`` as a special token and give it an embedding row in and out.

    The new rows (input embedding and LM head) are the mean of the rows of the
    tokens that existed before, so the token starts as an "average" word. llava-hf
    checkpoints pad their embedding matrices past the tokenizer (32064 rows for
    32002 tokens); the new id then fits without growing the matrices.
    """
    vocab = tokenizer.get_vocab()
    if pose_token in vocab:
        raise ValueError(
            f"the base tokenizer already has {pose_token}: load a base model, not a PoseGPT checkpoint"
        )
    old_len = len(tokenizer)
    tokenizer.add_special_tokens({"extra_special_tokens": [pose_token]}, replace_extra_special_tokens=False)
    token_id = pose_token_id(tokenizer, pose_token, "the base model")
    resize_for_tokenizer(model, len(tokenizer))
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[token_id] = weight[:old_len].float().mean(0).to(weight.dtype)
    return token_id


def resize_for_tokenizer(model: Any, n_tokens: int) -> None:
    """Grow the embedding matrices to ``n_tokens`` rows when they are smaller (never shrink)."""
    rows = model.get_input_embeddings().weight.shape[0]
    if n_tokens > rows:
        model.resize_token_embeddings(n_tokens, mean_resizing=False)
