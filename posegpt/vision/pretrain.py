"""Pretraining of the tiny pose encoder: person crops → SMPL pose, by direct 6D regression.

The encoder's global feature feeds a linear layer to 24 × 6D (bias: the training
mean pose); the loss is the L1 between rotation matrices plus the L1 between the
joints of the articulation (root rotation removed: joints are what PA-MPJPE scores,
and the rotation term alone gives leaf joints no signal). Crops are stored slightly wider
than the model crop (``context``) so that every step can take a jittered window,
the way a detector's box wanders around the true one.

The job (``jobs/pretrain_pose_encoder.py``) renders the crops from a synthetic world
drawn with its own seed and writes ``<out>`` (safetensors, encoder weights under
``net.*`` and the regressor under ``head.*``) with ``<out>.json``: provenance
(job, config, world seed, metrics, sha256).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posegpt.body.skeleton import NUM_JOINTS
from posegpt.geometry import axis_angle_to_rot6d, axis_angle_to_rotmat, rot6d_to_rotmat
from posegpt.metrics import pa_mpjpe
from posegpt.vision.config import IMAGENET_MEAN, IMAGENET_STD, PoseEncoderConfig
from posegpt.vision.pose_encoder import PoseEncoder


def _tiny_encoder() -> PoseEncoderConfig:
    return PoseEncoderConfig(kind="tiny_cnn", weights="posegpt/vision/weights/tiny_pose_cnn.safetensors")


@dataclass
class PoseEncoderPretrainConfig:
    """``jobs/pretrain_pose_encoder.py``: render crops from a synthetic world, train the tiny pose encoder."""

    out: str = "posegpt/vision/weights/tiny_pose_cnn.safetensors"
    """Weights file to write (safetensors); provenance goes to the same path with ``.json``."""
    work_dir: str = "outputs/pose_encoder"
    """Folder for the rendered world and the crop cache (reused when its settings match)."""
    world_seed: int = 1
    """Seed of the synthetic world the crops come from: not the demo's (0), so no demo test image is ever seen."""
    train_images: int = 12000
    """Single-person images rendered for training."""
    val_images: int = 800
    """Further images of the same world, held out to measure the encoder."""
    occluder_fraction: float = 0.25
    """Share of images with an occluder in front of the person (as in the demo's world)."""
    render_workers: int = 2
    """Processes rendering the world."""
    context: float = 1.15
    """Stored crops are this much wider than the model's crop, room for the jittered windows."""
    jitter_scale: float = 0.1
    """Window side varies by up to this fraction of the crop side."""
    jitter_shift: float = 0.06
    """Window centre moves by up to this fraction of the crop side."""
    encoder: PoseEncoderConfig = field(default_factory=_tiny_encoder)
    """The encoder to train (its ``weights`` is ignored here: ``out`` is written)."""
    batch_size: int = 64
    """Crops per step."""
    lr: float = 2.0e-3
    """Peak AdamW learning rate (cosine decay to 5% after a 200-step warm-up)."""
    weight_decay: float = 1.0e-4
    """AdamW weight decay."""
    max_steps: int = 8000
    """Steps at most."""
    max_minutes: float = 35.0
    """Wall-clock budget of the training loop; the cosine schedule is laid over the steps expected in it."""
    joint_weight: float = 5.0
    """Weight of the joint L1 (metres) against the rotation-matrix L1."""
    eval_every: int = 500
    """Steps between validation passes."""
    threads: int = 2
    """Torch threads."""
    seed: int = 0
    """Seed of initialisation, batches and jitter."""


class Pretrainer(nn.Module):
    """Encoder + linear pose regressor from its global feature."""

    def __init__(self, cfg: PoseEncoderConfig, mean_pose: Tensor) -> None:
        super().__init__()
        self.net = PoseEncoder(cfg).net
        width = self.net.width
        self.head = nn.Linear(width, NUM_JOINTS * 6)
        with torch.no_grad():
            self.head.weight.normal_(std=1e-3)
            self.head.bias.copy_(axis_angle_to_rot6d(mean_pose.view(NUM_JOINTS, 3)).reshape(-1))

    def forward(self, pixels: Tensor) -> Tensor:
        _, global_feature = self.net(pixels)
        return rot6d_to_rotmat(self.head(global_feature).view(-1, NUM_JOINTS, 6))


def chordal_mean_pose(poses: np.ndarray) -> Tensor:
    """(72,) axis-angle mean: per joint, the rotation nearest the mean rotation matrix."""
    from posegpt.geometry import rotmat_to_axis_angle

    mats = axis_angle_to_rotmat(torch.as_tensor(poses, dtype=torch.float64).view(-1, NUM_JOINTS, 3)).mean(0)
    u, _, vt = torch.linalg.svd(mats)
    d = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return rotmat_to_axis_angle(u @ fix @ vt).reshape(-1).float()


def windows(
    crops: Tensor, size: tuple[int, int], context: float, generator: torch.Generator | None, cfg: Any
) -> Tensor:
    """Normalised (B, 3, h, w) model inputs cut from uint8 context crops (B, H, W, 3); jittered when a generator is given."""
    x = crops.permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]
    scale = torch.full((b,), 1.0 / context)
    shift = torch.zeros(b, 2)
    if generator is not None:
        scale = scale * (1 + cfg.jitter_scale * (2 * torch.rand(b, generator=generator) - 1))
        shift = (2 * torch.rand(b, 2, generator=generator) - 1) * cfg.jitter_shift * 2 / context
        gain = 1 + 0.25 * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
        bias = 0.08 * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
        x = (x * gain + bias).clamp(0, 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [b, 3, size[0], size[1]], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class PretrainResult:
    state: dict[str, Tensor]
    metrics: dict[str, float]
    curve: list[dict[str, float]]


def evaluate(
    model: Pretrainer, body: Any, crops: Tensor, poses: Tensor, cfg: PoseEncoderPretrainConfig
) -> float:
    """Mean PA-MPJPE (mm) of the regressed poses on held-out crops."""
    model.eval()
    errors = []
    size = (cfg.encoder.input_height, cfg.encoder.input_width)
    with torch.no_grad():
        for i in range(0, len(crops), 256):
            pred = model(windows(crops[i : i + 256], size, cfg.context, None, cfg))
            gt = body.joints(poses[i : i + 256])
            joints = _joints_from_rotmats(body, pred)
            errors.append(pa_mpjpe(joints, gt)[0])
    model.train()
    return float(torch.cat(errors).mean())


def pretrain(
    cfg: PoseEncoderPretrainConfig,
    body: Any,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    log: Any = print,
) -> PretrainResult:
    """Train on (crops uint8 (N, H, W, 3), poses (N, 72)); metrics on ``val`` against the mean pose."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_crops, train_poses = torch.from_numpy(train[0]), torch.from_numpy(train[1]).float()
    val_crops, val_poses = torch.from_numpy(val[0]), torch.from_numpy(val[1]).float()
    mean_pose = chordal_mean_pose(train[1])
    with torch.no_grad():
        gt_val = body.joints(val_poses)
        mean_joints = body.joints(mean_pose[None].expand(len(val_poses), -1))
        mean_pa = float(pa_mpjpe(mean_joints, gt_val)[1])
    model = Pretrainer(cfg.encoder, mean_pose)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    size = (cfg.encoder.input_height, cfg.encoder.input_width)
    start = time.perf_counter()
    budget = cfg.max_minutes * 60.0
    planned = cfg.max_steps
    curve: list[dict[str, float]] = []
    step = 0
    n = len(train_crops)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    warmup = 200
    last_mark = (0, 0.0)
    while step < planned:
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        progress = min(1.0, step / max(1, planned))
        factor = min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        x = windows(train_crops[idx], size, cfg.context, generator, cfg)
        target_pose = train_poses[idx]
        pred = model(x)
        target = axis_angle_to_rotmat(target_pose.view(-1, NUM_JOINTS, 3))
        rot_loss = (pred - target).abs().mean()
        # Joints of the articulation alone (root rotation set to the identity on both sides): what
        # PA-MPJPE scores, free of the camera-frame facing that dominates camera-frame joints.
        joints = _joints_from_rotmats(body, _without_root(pred))
        with torch.no_grad():
            gt_joints = _joints_from_rotmats(body, _without_root(target))
        joint_loss = (joints - gt_joints).abs().mean()
        loss = rot_loss + cfg.joint_weight * joint_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        step += 1
        elapsed = time.perf_counter() - start
        if step % 50 == 0 and step < planned:
            # Lay the cosine schedule over the steps the time budget allows, re-measured as the
            # machine's load changes (the speed of the last 50 steps), and stop when it is spent.
            recent = (elapsed - last_mark[1]) / (step - last_mark[0])
            last_mark = (step, elapsed)
            planned = min(cfg.max_steps, max(step + 1, step + int((budget - elapsed) / recent)))
            if step % 500 == 0 or step == 50:
                log(f"step {step}: {recent:.3f} s/step, planning {planned} steps")
        if step % cfg.eval_every == 0 or step == planned:
            val_pa = evaluate(model, body, val_crops, val_poses, cfg)
            point = {
                "step": float(step),
                "seconds": elapsed,
                "loss": loss.item(),
                "val_pa_mpjpe_mm": val_pa,
                "val_pa_mpjpe_vs_mean_pose": val_pa / mean_pa,
            }
            curve.append(point)
            log(
                f"step {step}/{planned} {elapsed:.0f}s loss {loss.item():.4f} "
                f"val PA-MPJPE {val_pa:.1f} mm = {val_pa / mean_pa:.3f}x mean pose"
            )
    final = curve[-1]["val_pa_mpjpe_mm"] if curve else evaluate(model, body, val_crops, val_poses, cfg)
    metrics = {
        "val_pa_mpjpe_mm": final,
        "mean_pose_pa_mpjpe_mm": mean_pa,
        "val_pa_mpjpe_vs_mean_pose": final / mean_pa,
        "steps": float(step),
        "train_seconds": time.perf_counter() - start,
        "train_crops": float(n),
        "val_crops": float(len(val_crops)),
    }
    state = {f"net.{k}": v.detach().contiguous() for k, v in model.net.state_dict().items()}
    state.update({f"head.{k}": v.detach().contiguous() for k, v in model.head.state_dict().items()})
    return PretrainResult(state, metrics, curve)


def _without_root(rotmats: Tensor) -> Tensor:
    eye = torch.eye(3, dtype=rotmats.dtype).expand(rotmats.shape[0], 1, 3, 3)
    return torch.cat([eye, rotmats[:, 1:]], dim=1)


def _joints_from_rotmats(body: Any, rotmats: Tensor) -> Tensor:
    """(B, 24, 3) joints of betas 0 by forward kinematics on rotation matrices (differentiable everywhere)."""
    from posegpt.body.skeleton import PARENTS

    rest = body.j_template.to(rotmats.dtype)
    world_rot: list[Tensor] = []
    world_pos: list[Tensor] = []
    for j, parent in enumerate(PARENTS):
        if parent < 0:
            world_rot.append(rotmats[:, j])
            world_pos.append(rest[j].expand(rotmats.shape[0], 3))
            continue
        bone = rest[j] - rest[parent]
        world_pos.append(world_pos[parent] + world_rot[parent] @ bone)
        world_rot.append(world_rot[parent] @ rotmats[:, j])
    return torch.stack(world_pos, dim=1)
