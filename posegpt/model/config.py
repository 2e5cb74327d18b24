"""Typed settings of the PoseGPT model: backbone, LoRA, pose head, loss weights.

Presets live in ``configs/model/`` (``tiny``, ``llava-1.5-7b``, ``llava-1.5-13b``);
job configs include one under their ``model:`` section with ``_base_``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from posegpt.vision.config import PoseEncoderConfig

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
"""The system line of LLaVA-1.5's ``v1`` conversation template."""

LANGUAGE_MODEL_LORA_TARGETS = (
    r".*language_model\.(?:model\.)?layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(?:gate_proj|up_proj|down_proj))"
)
"""Every attention and MLP projection of the Llama decoder, and nothing in the CLIP tower.

A list such as ``["q_proj", "v_proj"]`` would also match CLIP's attention layers
(same names), so the targets are a regex that PEFT matches against full module names.
"""


@dataclass
class TinyBaseConfig:
    """Shape of the tiny LLaVA that ``posegpt.model.tiny`` builds (the embedded default)."""

    image_size: int = 64
    """Side of the square input image in pixels (a multiple of ``patch_size``)."""
    patch_size: int = 16
    """CLIP patch side in pixels; (image_size / patch_size)² image tokens per image."""
    vision_layers: int = 3
    """Transformer layers of the tiny CLIP vision tower."""
    vision_width: int = 128
    """Hidden width of the tiny CLIP vision tower (its MLP is 4x wider)."""
    vision_heads: int = 4
    """Attention heads of the tiny CLIP vision tower."""
    text_layers: int = 3
    """Decoder layers of the tiny Llama."""
    text_width: int = 256
    """Hidden width of the tiny Llama."""
    text_heads: int = 4
    """Attention heads of the tiny Llama."""
    text_intermediate: int = 512
    """MLP width of the tiny Llama."""
    context_length: int = 512
    """Maximum positions of the tiny Llama (prompt plus answer)."""
    vocab_size: int = 2048
    """Target size of the byte-level BPE vocabulary trained on the corpus."""
    embedding_rows: int = 0
    """Rows of the embedding matrices; 0: the tokenizer's size. llava-hf pads 32002 tokens to 32064 rows."""
    seed: int = 0
    """Seed of the random weights, so that two builds give the same model."""


@dataclass
class PoseGPTModelConfig:
    """The PoseGPT model over a Hugging Face ``LlavaForConditionalGeneration`` checkpoint."""

    base_model: str = ".cache/models/tiny-llava"
    """LLaVA checkpoint directory in the llava-hf layout (config.json, weights, tokenizer, processor): a local path or an ``s3://`` prefix (mirrored into the cache folder)."""
    build_tiny_if_missing: bool = False
    """Build the tiny LLaVA of the ``tiny`` section at ``base_model`` when that local folder does not exist yet (the embedded default)."""
    tiny: TinyBaseConfig = field(default_factory=TinyBaseConfig)
    """Architecture of the tiny LLaVA, used only by ``build_tiny_if_missing``."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight and compute dtype of the backbone (bf16 on A100/H100, float32 on CPU)."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel passed to transformers."""
    pose_token: str = "<POSE>"
    """The special token whose hidden state is decoded to a pose."""
    pose_input_token: str = "<POSE_IN>"
    """The placeholder of a pose given to the model in a user turn; the pose input encoder's embeddings replace it."""
    pose_input_tokens: int = 1
    """LM input embeddings the pose input encoder makes per input pose (0: the model reads no poses, no token is added)."""
    system_prompt: str = LLAVA_V1_SYSTEM
    """System line placed before the first ``USER:`` turn."""
    max_length: int = 2048
    """Longest training sequence in tokens (image tokens included); longer samples are cut at the end."""
    lora_r: int = 128
    """LoRA rank (paper: 128)."""
    lora_alpha: int = 256
    """LoRA alpha (paper: 256); the update is scaled by alpha / r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    lora_target: str = LANGUAGE_MODEL_LORA_TARGETS
    """Regex over full module names choosing the linear layers that get LoRA; must match only language-model modules."""
    train_projector: bool = False
    """Also train the multimodal projector (the vision tower always stays frozen)."""
    gradient_checkpointing: bool = False
    """Recompute decoder activations in the backward pass to save memory (7B/13B on one GPU)."""
    lambda_text: float = 1.0
    """Weight of the cross-entropy on assistant tokens."""
    lambda_pose: float = 0.1
    """Weight of the L1 between predicted and true rotation matrices (paper: 0.1)."""
    pose_loss_root_weight: float = 1.0
    """Weight of joint 0 (the global orientation) in the pose L1 relative to each body joint's 1; the loss is the weighted mean over the 24 joints (1: the plain mean)."""
    pose_encoder: PoseEncoderConfig = field(default_factory=PoseEncoderConfig)
    """A pretrained pose-aware image encoder whose projected features join CLIP's image tokens (``kind: none``: CLIP alone)."""
    pose_head_init: Literal["identity", "mean"] = "identity"
    """Bias of the pose head's last layer: the 6D of the identity rotation per joint, or of ``pose_head_mean_pose``."""
    pose_head_mean_pose: list[float] | None = None
    """72 axis-angle values used when ``pose_head_init`` is ``mean``; empty: ``jobs/train.py`` computes the training mean pose from the shards."""
    pose_head_init_std: float = 1e-3
    """Standard deviation of the pose head's last-layer weights at initialisation (small, so every joint starts near its bias)."""
    pose_head_input_norm: Literal["none", "running"] = "none"
    """``running``: the head standardises each hidden feature with running statistics before its MLP (``posegpt.model.pose_head.RunningStandardizer``); ``none``: the paper's plain MLP."""
    pose_head_norm_momentum: float = 0.05
    """How far each training batch moves the running statistics of ``pose_head_input_norm: running`` (the first batch sets them)."""

    def validate(self) -> None:
        if not self.base_model:
            raise ValueError("model.base_model must name a LLaVA checkpoint directory or s3:// prefix")
        if self.lora_r <= 0 or self.lora_alpha <= 0:
            raise ValueError(
                f"model.lora_r and model.lora_alpha must be positive, got {self.lora_r}, {self.lora_alpha}"
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0.0 < self.pose_head_norm_momentum <= 1.0:
            raise ValueError(
                f"model.pose_head_norm_momentum must be in (0, 1], got {self.pose_head_norm_momentum}"
            )
        if self.pose_loss_root_weight < 0:
            raise ValueError(f"model.pose_loss_root_weight must be >= 0, got {self.pose_loss_root_weight}")
        self.pose_encoder.validate()
        if self.lambda_text < 0 or self.lambda_pose < 0:
            raise ValueError(f"loss weights must be >= 0, got {self.lambda_text}, {self.lambda_pose}")
        if not 0 <= self.pose_input_tokens <= 64:
            raise ValueError(f"model.pose_input_tokens must be in [0, 64], got {self.pose_input_tokens}")
        if self.pose_input_tokens and self.pose_input_token == self.pose_token:
            raise ValueError(f"model.pose_input_token and model.pose_token are both {self.pose_token!r}")
        if self.max_length < 8:
            raise ValueError(f"model.max_length must be at least 8 tokens, got {self.max_length}")
        # pose_head_init=mean without a mean pose is valid here: jobs/train.py fills it from the shards,
        # and building a head without one fails naming both settings.
        if self.pose_head_mean_pose is not None and len(self.pose_head_mean_pose) != 72:
            raise ValueError(
                f"model.pose_head_mean_pose must hold 72 axis-angle values, got {len(self.pose_head_mean_pose)}"
            )
        if self.tiny.image_size % self.tiny.patch_size:
            raise ValueError(
                f"model.tiny.image_size {self.tiny.image_size} is not a multiple of patch_size {self.tiny.patch_size}"
            )
