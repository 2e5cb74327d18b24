"""The tiny preset: a small LLaVA saved in the llava-hf directory layout.

``build_tiny_base`` makes a small CLIP vision tower and a small Llama with random
weights, a byte-level BPE tokenizer trained offline on a text corpus, a
``CLIPImageProcessor`` and a ``LlavaProcessor``, and writes them with
``save_pretrained``. The loader then reads that folder exactly as it reads
``llava-hf/llava-1.5-7b-hf``, so every code path is the one a 7B model takes.

    python -m posegpt.model.tiny --out .cache/models/tiny-llava [--corpus-file F] [--config PRESET]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from posegpt.model.config import LLAVA_V1_SYSTEM, TinyBaseConfig

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)
"""Base vocabulary specials, in id order (``<POSE>`` and ``<POSE_IN>`` are added later by the loader, as for
llava-hf)."""

MARKER_FILE = "tiny_base.json"
"""Written last: a folder holding it is a finished build (a crashed build is rebuilt)."""

CHAT_TEMPLATE = (
    "{% set sys = namespace(text='" + LLAVA_V1_SYSTEM.replace("'", "\\'") + "') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}{% set sys.text = message['content'] %}"
    "{% endif %}{% endfor %}{{ sys.text + ' ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""LLaVA-1.5 ``v1`` format for plain-string messages (the same text as ``posegpt.model.conversation``)."""

BUILTIN_CORPUS = (
    LLAVA_V1_SYSTEM,
    "USER: ASSISTANT: <image>\n",
    "Here is the pose. Sure, the person is standing. What is the pose of the person in this image?",
    "Generate the SMPL pose of a person who is sitting with the left knee bent and the right arm raised.",
    "The body leans forward, the arms are stretched out to the sides and the head is turned to the right.",
    "left right arm arms leg legs knee knees elbow elbows hand hands foot feet hip hips shoulder shoulders "
    "head neck torso back chest spine ankle ankles wrist wrists bent straight raised lowered crossed "
    "standing sitting kneeling lying walking running jumping squatting bending stretching dancing waving "
    "forward backward up down front behind above below beside toward away rotated turned twisted tilted "
    "slightly strongly fully partly almost the a an is are with and of to in on at by his her their while",
    "Describe the image. How many people are there? What is the person doing? Which sport is shown?",
)
"""Text every tiny tokenizer sees: the conversation scaffolding and everyday pose words."""


def default_corpus() -> list[str]:
    """The built-in corpus plus every template phrasing of ``posegpt.data.templates``, the pose-input
    tasks' (describe, compare, edit a given pose) included."""
    from posegpt.data.templates import POSE_INPUT_TASKS, POSE_TASKS, all_template_text

    return [*BUILTIN_CORPUS, *all_template_text(tasks=(*POSE_TASKS, *POSE_INPUT_TASKS))]


def _train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # add_prefix_space=False: " word" and "word" stay different tokens, as in GPT-2; the
    # conversation format puts the space in front of every turn, so answers start with "Ġword".
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*BUILTIN_CORPUS, *corpus], trainer)
    bos = tok.token_to_id("<s>")
    # Llama's tokenizers put <s> in front of every encoded text; so does this one.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=1 << 30,
    )
    return fast


def make_tiny_parts(corpus: Iterable[str], cfg: TinyBaseConfig | None = None) -> tuple[Any, Any]:
    """A random-weight ``LlavaForConditionalGeneration`` and its ``LlavaProcessor``, in memory."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    cfg = cfg or TinyBaseConfig()
    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"tiny image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    tokenizer = _train_tokenizer([t for t in corpus if t], cfg.vocab_size)
    if cfg.embedding_rows and cfg.embedding_rows < len(tokenizer):
        raise ValueError(
            f"tiny embedding_rows {cfg.embedding_rows} is below the tokenizer's {len(tokenizer)} tokens"
        )
    vision = CLIPVisionConfig(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.vision_width,
        intermediate_size=4 * cfg.vision_width,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        projection_dim=cfg.vision_width,
    )
    text = LlamaConfig(
        vocab_size=cfg.embedding_rows or len(tokenizer),
        hidden_size=cfg.text_width,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_heads,
        max_position_embeddings=cfg.context_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(cfg.image_size // cfg.patch_size) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlavaForConditionalGeneration(config)
        # The final RMSNorm fixes |h| at sqrt(width); with LM-head rows of std 0.02 (|w| ≈ 0.3)
        # no logit can exceed ≈5, so a frozen head caps the CE near 1.5 nats however well the
        # LoRA layers learn. Rows of norm ≈1, like a pretrained LM's, let it become confident.
        with torch.no_grad():
            model.lm_head.weight.normal_(std=cfg.text_width**-0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def build_tiny_base(out_dir: str | Path, corpus: Iterable[str], cfg: TinyBaseConfig | None = None) -> Path:
    """Write a tiny LLaVA checkpoint directory (llava-hf layout) to ``out_dir``; returns the path."""
    cfg = cfg or TinyBaseConfig()
    texts = list(corpus)
    model, processor = make_tiny_parts(texts, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).unlink(missing_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / MARKER_FILE).write_text(
        json.dumps(
            {
                "tiny": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                "corpus_texts": len(texts),
                **corpus_record(texts, cfg),
            }
        )
    )
    return out


def fingerprint(corpus: Sequence[str], cfg: TinyBaseConfig) -> str:
    """SHA-256 of the shape and a tokenizer training text."""
    digest = hashlib.sha256(json.dumps({k: getattr(cfg, k) for k in cfg.__dataclass_fields__}).encode())
    for text in corpus:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def corpus_record(texts: Sequence[str], cfg: TinyBaseConfig) -> dict[str, Any]:
    """What the marker file records of a build's corpus: the fingerprint of the whole text, of the
    project's templates in it (``None`` when it does not start with them) and how many texts a user added."""
    default = default_corpus()
    templated = list(texts[: len(default)]) == default
    return {
        "fingerprint": fingerprint(texts, cfg),
        "templates": fingerprint(default, cfg) if templated else None,
        "extra_texts": len(texts) - len(default) if templated else len(texts),
    }


def _marker(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MARKER_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_built(out_dir: str | Path) -> bool:
    return _marker(out_dir) is not None


def is_current(out_dir: str | Path, cfg: TinyBaseConfig, corpus: Sequence[str] | None = None) -> bool:
    """A finished build of this shape from ``corpus`` (or, with ``None``, from the current templates
    plus whatever texts its builder added) is at ``out_dir``."""
    marker = _marker(out_dir)
    if marker is None:
        return False
    if corpus is not None:
        return marker.get("fingerprint") == fingerprint(corpus, cfg)
    return marker.get("templates") == fingerprint(default_corpus(), cfg)


def ensure_tiny_base(
    out_dir: str | Path, cfg: TinyBaseConfig | None = None, corpus: Sequence[str] | None = None
) -> Path:
    """Build the tiny base at ``out_dir`` unless a build of this shape and corpus is already there.

    A build from an older checkout's templates (its tokenizer lacks the current special tokens
    or phrasings) is rebuilt. The weights come from the seed alone and every checkpoint carries
    its own tokenizer, so checkpoints trained on the older build still load. A build that holds
    a user's extra texts is never rebuilt without them: that is an error saying how to rebuild.
    """
    cfg = cfg or TinyBaseConfig()
    if is_current(out_dir, cfg, corpus):
        return Path(out_dir)
    marker = _marker(out_dir)
    if marker is not None and corpus is None and marker.get("extra_texts", 0):
        raise ValueError(
            f"tiny base at {out_dir} was built from another shape or older templates plus "
            f"{marker['extra_texts']} texts of a corpus file; rebuild it with them: "
            f"python -m posegpt.model.tiny --out {out_dir} --corpus-file <file> --force"
        )
    if marker is not None:
        log.warning("tiny base at %s was built from another shape or corpus: rebuilding it", out_dir)
    return build_tiny_base(out_dir, default_corpus() if corpus is None else corpus, cfg)


def main(argv: Sequence[str] | None = None) -> int:
    from posegpt.runtime import setup_environment

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder to write the tiny LLaVA checkpoint to")
    parser.add_argument("--corpus-file", help="extra tokenizer training text, one sample per line")
    parser.add_argument(
        "--config", help="model preset whose tiny: section gives the shape (default: built-in)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when a finished build is there")
    args = parser.parse_args(argv)
    setup_environment()
    shape = TinyBaseConfig()
    if args.config:
        from posegpt.config import load_config
        from posegpt.model.config import PoseGPTModelConfig

        shape = load_config(PoseGPTModelConfig, args.config).tiny
    corpus = default_corpus()
    if args.corpus_file:
        path = Path(args.corpus_file)
        if not path.is_file():
            parser.error(f"--corpus-file {path} does not exist")
        corpus += [line for line in path.read_text().splitlines() if line.strip()]
    if is_current(args.out, shape, corpus if args.corpus_file else None) and not args.force:
        print(f"tiny base already built at {args.out}")
        return 0
    build_tiny_base(args.out, corpus, shape)
    print(f"tiny base written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
