"""The pose input encoder: an SMPL pose given to the model → LM input embeddings.

A pose in a user turn is written as ``<POSE_IN>`` (``PoseGPTModelConfig.pose_input_token``)
and passed by value (72 axis-angle floats, DESIGN.md's frames). The collator expands each
``<POSE_IN>`` to ``pose_input_tokens`` copies, and ``PoseGPTModel.encode`` replaces their
embeddings with this module's output, the way LLaVA's image features replace ``<image>``.

Axis-angle is discontinuous at |θ| = π and wraps at 2π; the encoder reads the 6D of each
joint's rotation (Zhou et al.'s layout, ``posegpt.geometry``), which is continuous, through
an MLP ``144 → hidden → tokens × hidden``. Its output is RMS-normalised and scaled per
channel, the scale starting at the RMS of the LM's token embeddings: the pose tokens then
enter the residual stream at the size of the words around them, in every preset.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from posegpt.body.skeleton import NUM_JOINTS, POSE_DIM
from posegpt.geometry import axis_angle_to_rot6d

ROT6D_FEATURES = NUM_JOINTS * 6


class PoseInputEncoder(nn.Module):
    """MLP from (Q, 72) axis-angle poses to (Q, num_tokens, hidden) input embeddings."""

    def __init__(self, hidden_size: int, num_tokens: int = 1, embedding_rms: float = 1.0) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"a pose input encoder makes at least one token, got {num_tokens}")
        self.hidden_size = hidden_size
        self.num_tokens = num_tokens
        self.fc1 = nn.Linear(ROT6D_FEATURES, hidden_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_size, num_tokens * hidden_size)
        self.norm = nn.RMSNorm(hidden_size, eps=1e-6)
        with torch.no_grad():
            self.norm.weight.fill_(float(embedding_rms))

    def forward(self, poses: Tensor) -> Tensor:
        """(Q, 72) axis-angle → (Q, num_tokens, hidden) in the module's dtype."""
        if poses.dim() != 2 or poses.shape[-1] != POSE_DIM:
            raise ValueError(f"pose inputs must be (Q, {POSE_DIM}) axis-angle, got {tuple(poses.shape)}")
        dtype = self.fc1.weight.dtype
        rot6d = axis_angle_to_rot6d(poses.float().view(-1, NUM_JOINTS, 3)).reshape(-1, ROT6D_FEATURES)
        out = self.fc2(self.act(self.fc1(rot6d.to(dtype))))
        return self.norm(out.view(-1, self.num_tokens, self.hidden_size))


def embedding_rms(weight: Tensor) -> float:
    """Mean root-mean-square of the rows of an embedding matrix (the size of a word's input embedding)."""
    return float(weight.detach().float().pow(2).mean(-1).sqrt().mean())
