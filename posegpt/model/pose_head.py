"""The SMPL head: the hidden state of a ``<POSE>`` prediction → 24 joint rotations.

An MLP ``hidden → hidden → 144`` (24 × 6D, the first two columns of each rotation
matrix) as in the paper. Its last layer starts with small weights and a bias equal
to the 6D of the identity (or of a mean pose) for every joint: with PyTorch's
default init some joints start in the antipodal basin of Gram–Schmidt + L1 and
never leave it (DESIGN.md, "Model").

Optionally the MLP reads its input standardised per feature with running statistics
(``input_norm="running"``). The hidden states of a small LM differ between images by a
fraction of what every image row shares (for the tiny preset's random LM, 1/7 of the
common offset): an MLP trained by Adam on such inputs learns a readout hundreds of steps
later than the same MLP on standardised inputs, though both hold the same information.
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


class RunningStandardizer(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` per feature, with statistics tracked in training and frozen in eval.

    Unlike batch norm, training also divides by the running statistics (not the batch's), so a
    row's output never depends on the other rows of its batch and training matches inference.
    The first training batch sets the statistics; later ones move them by ``momentum``. The
    statistics are buffers: saved and loaded with the head, never trained. Each data-parallel
    rank tracks its own (rank 0's are saved).
    """

    def __init__(self, size: int, momentum: float = 0.05, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"pose head norm momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        if self.training and len(flat) > 1:
            with torch.no_grad():
                mean, var = flat.mean(0), flat.var(0, unbiased=False)
                rate = 1.0 if int(self.updates) == 0 else self.momentum
                self.mean.lerp_(mean.to(self.mean.dtype), rate)
                self.var.lerp_(var.to(self.var.dtype), rate)
                self.updates += 1
        out = (x.float() - self.mean.float()) * torch.rsqrt(self.var.float() + self.eps)
        return out.to(x.dtype)


class PoseHead(nn.Module):
    """MLP from a language-model hidden state to SMPL joint rotations."""

    def __init__(
        self,
        hidden_size: int,
        *,
        init: str = "identity",
        mean_pose: Sequence[float] | None = None,
        init_std: float = 1e-3,
        input_norm: str = "none",
        norm_momentum: float = 0.05,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        if input_norm not in ("none", "running"):
            raise ValueError(f"pose head input norm must be 'none' or 'running', got {input_norm!r}")
        self.input_norm = RunningStandardizer(hidden_size, norm_momentum) if input_norm == "running" else None
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
        hidden = hidden.to(self.fc1.weight.dtype)
        if self.input_norm is not None:
            hidden = self.input_norm(hidden)
        out = self.fc2(self.act(self.fc1(hidden)))
        return out.view(*hidden.shape[:-1], NUM_JOINTS, ROT6D_DIM)

    def rotmats(self, hidden: Tensor) -> Tensor:
        """(..., hidden) → (..., 24, 3, 3) rotation matrices, Gram–Schmidt in float32."""
        return rot6d_to_rotmat(self.forward(hidden).float())


def head_from_state(state: dict[str, Tensor], where: str) -> PoseHead:
    """A ``PoseHead`` shaped by a saved state dict (hidden size, input norm), with that state loaded strictly."""
    if "fc1.weight" not in state:
        raise ValueError(f"{where}: not a pose head (no fc1.weight among {sorted(state)[:4]})")
    head = PoseHead(
        int(state["fc1.weight"].shape[1]),
        input_norm="running" if "input_norm.mean" in state else "none",
    )
    head.load_state_dict(state, strict=True)
    return head
