"""Typed settings of the pose-aware image encoder that sits beside CLIP (``posegpt.vision.pose_encoder``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class CnnShape:
    """Shape of the tiny convolutional pose encoder (the embedded default)."""

    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    """Channels of the stem and of each stride-2 residual stage; the last one is the token width, also of the pooled global token that pretraining's pose regressor reads."""
    stem_stride: int = 2
    """Stride of the stem convolution (2 quarters the cost of every later layer)."""


@dataclass
class VitShape:
    """Shape of HMR 2.0's ViT backbone (4D-Humans ``hmr2/models/backbones/vit.py``)."""

    embed_dim: int = 1280
    """Token width (ViT-H: 1280)."""
    depth: int = 32
    """Transformer blocks (ViT-H: 32)."""
    num_heads: int = 16
    """Attention heads."""
    patch_size: int = 16
    """Patch side in pixels (the patch convolution also pads by 2, as HMR 2.0's does)."""
    mlp_ratio: float = 4.0
    """MLP width / token width."""


@dataclass
class PoseEncoderConfig:
    """A frozen, pretrained pose-aware image encoder whose features reach the LM as extra image tokens."""

    kind: Literal["none", "tiny_cnn", "hmr2_vit"] = "none"
    """``none``: CLIP alone (LLaVA as released); ``tiny_cnn``: the project's small CNN pretrained on the synthetic world; ``hmr2_vit``: HMR 2.0's ViT backbone."""
    weights: str = ""
    """Weights file: a safetensors file for ``tiny_cnn`` (relative paths start at the repository root), or HMR 2.0's Lightning checkpoint (``.ckpt`` with ``backbone.*`` keys) for ``hmr2_vit``."""
    sha256: str = ""
    """Expected SHA-256 of ``weights``; empty: not checked. A checkpoint records it so that a changed file is noticed."""
    mode: Literal["append", "replace"] = "append"
    """``append``: the pose tokens follow CLIP's at the ``<image>`` placeholder; ``replace``: they take CLIP's place."""
    input_height: int = 64
    """Input height in pixels (HMR 2.0: 256)."""
    input_width: int = 64
    """Input width in pixels (HMR 2.0: 192, the middle of a 256 px square crop)."""
    pool: int = 1
    """Average-pool the feature grid by this factor before it becomes tokens (HMR 2.0's 16x12 grid with 2: 48 tokens)."""
    cnn: CnnShape = field(default_factory=CnnShape)
    """Shape of ``tiny_cnn``."""
    vit: VitShape = field(default_factory=VitShape)
    """Shape of ``hmr2_vit``."""

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def validate(self) -> None:
        if not self.enabled:
            return
        if not self.weights:
            raise ValueError(
                f"model.pose_encoder.kind={self.kind} needs model.pose_encoder.weights (a weights file path)"
            )
        if self.input_height < 16 or self.input_width < 16:
            raise ValueError(
                f"model.pose_encoder input must be at least 16x16, got {self.input_height}x{self.input_width}"
            )
        if self.pool < 1:
            raise ValueError(f"model.pose_encoder.pool must be >= 1, got {self.pool}")
        if self.kind == "tiny_cnn" and len(self.cnn.widths) < 2:
            raise ValueError("model.pose_encoder.cnn.widths needs a stem and at least one stage")
        if self.kind == "hmr2_vit" and self.vit.embed_dim % self.vit.num_heads:
            raise ValueError(
                f"model.pose_encoder.vit.embed_dim {self.vit.embed_dim} is not a multiple of num_heads {self.vit.num_heads}"
            )
