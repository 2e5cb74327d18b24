"""The SMPL head: the hidden state of a ``<POSE>`` prediction → 24 joint rotations.

An MLP ``hidden → hidden → 144`` (24 × 6D, the first two columns of each rotation
matrix) as in the paper. Its last layer starts with small weights and a bias equal
to the 6D of the identity (or of a mean pose) for every joint: with PyTorch's
default init some joints start in the antipodal basin of Gram–Schmidt + L1 and
never leave it (DESIGN.md, "Model").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from posegpt.body.skeleton import NUM_JOINTS, POSE_DIM
from posegpt.geometry import axis_angle_to_rot6d, rot6d_to_rotmat

ROT6D_DIM = 6
OUT_DIM = NUM_JOINTS * ROT6D_DIM


def identity_rot6d() -> Tensor:
    """(24·6,) 6D of the identity rotation for every joint: ``[1, 0, 0, 0, 1, 0]``."""
    return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(NUM_JOINTS)


class PoseHead(nn.Module):
    """MLP from a language-model hidden state to SMPL joint rotations."""

    def __init__(
        self,
        hidden_size: int,
        *,
        init: str = "identity",
        mean_pose: Sequence[float] | None = None,
        init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.fc1 = nn.Linear(hidden_size, hidden_size)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, OUT_DIM)
        self.reset_output(init=init, mean_pose=mean_pose, init_std=init_std)

    def reset_output(self, *, init: str, mean_pose: Sequence[float] | None, init_std: float) -> None:
        """Small last-layer weights; bias = 6D of the identity or of ``mean_pose`` (72 axis-angle values)."""
        if init == "identity":
            bias = identity_rot6d()
        elif init == "mean":
            if mean_pose is None or len(mean_pose) != POSE_DIM:
                raise ValueError(
                    f"model.pose_head_init=mean needs model.pose_head_mean_pose ({POSE_DIM} axis-angle values; "
                    "jobs/train.py fills it from the training shards) or model.pose_head_init=identity"
                )
            aa = torch.as_tensor(list(mean_pose), dtype=torch.float64).view(NUM_JOINTS, 3)
            if not torch.isfinite(aa).all():
                raise ValueError("the mean pose for the pose head holds NaN or inf")
            bias = axis_angle_to_rot6d(aa).reshape(-1).float()
        else:
            raise ValueError(f"pose head init must be 'identity' or 'mean', got {init!r}")
        with torch.no_grad():
            nn.init.normal_(self.fc2.weight, std=init_std)
            self.fc2.bias.copy_(bias.to(self.fc2.bias.dtype))

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., hidden) → (..., 24, 6) raw 6D per joint."""
        out = self.fc2(self.act(self.fc1(hidden.to(self.fc1.weight.dtype))))
        return out.view(*hidden.shape[:-1], NUM_JOINTS, ROT6D_DIM)

    def rotmats(self, hidden: Tensor) -> Tensor:
        """(..., hidden) → (..., 24, 3, 3) rotation matrices, Gram–Schmidt in float32."""
        return rot6d_to_rotmat(self.forward(hidden).float())
