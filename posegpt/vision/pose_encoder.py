"""Pose-aware image encoders beside CLIP: the tiny CNN of the embedded default and HMR 2.0's ViT.

Either encoder is frozen and pretrained; its feature grid (average-pooled by
``pool``) plus one global token become extra image tokens of the LM, through a
trained projector of their own (``PosePathway``), as UniPose feeds a pose encoder
beside CLIP. ``PoseGPTModel`` scatters them at the ``<image>`` placeholder after
CLIP's tokens (``mode: append``) or in their place (``mode: replace``).

HMR 2.0's backbone (4D-Humans, ``hmr2/models/backbones/vit.py``) is rebuilt here
with the same module names, so the ``backbone.*`` entries of the released
Lightning checkpoint load with ``load_state_dict(strict=True)``: a 16 px patch
convolution with padding 2 (256x192 input: a 16x12 grid), absolute position
embeddings whose first row is added to every patch, pre-norm blocks
(``norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2``) and ``last_norm``.
"""

from __future__ import annotations

import hashlib
import itertools
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posegpt.vision.config import IMAGENET_MEAN, IMAGENET_STD, PoseEncoderConfig

BACKBONE_PREFIX = "backbone."
"""Prefix of the ViT's entries in HMR 2.0's Lightning ``state_dict``."""


REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_weights(weights: str | Path) -> Path:
    """An absolute path for ``weights``: relative paths are tried in the working folder, then the repository root
    (Ray workers run in their own folders, the shipped weights live in the repository)."""
    path = Path(weights).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return REPO_ROOT / path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the tiny CNN ---------------------------------------------------------------------------


class ResidualStage(nn.Module):
    """Two 3x3 convolutions (the first with stride 2) and a strided 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class TinyPoseCNN(nn.Module):
    """A small ResNet: stem, stride-2 stages, and a global feature read from the whole grid.

    ``forward`` gives the last stage's grid (B, C, h, w) and the global feature (B, C); the
    global feature is a linear map of the *flattened* grid, not its average: an average of a
    convolutional grid forgets where each limb is, which is what a pose is. Pretraining
    regresses the pose from the global feature with a linear layer.
    """

    def __init__(self, widths: Sequence[int], stem_stride: int, grid: tuple[int, int]) -> None:
        super().__init__()
        widths = list(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(widths[0])
        )
        self.stages = nn.ModuleList(ResidualStage(a, b) for a, b in itertools.pairwise(widths))
        self.width = widths[-1]
        self.global_fc = nn.Linear(self.width * grid[0] * grid[1], self.width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        return x, F.relu(self.global_fc(x.flatten(1)))


# -- HMR 2.0's ViT ---------------------------------------------------------------------------


class VitPatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        # HMR 2.0's PatchEmbed: padding 4 + 2 * (ratio // 2 - 1) = 2 for ratio 1.
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, padding=2)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class VitAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class VitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VitAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = VitMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Hmr2Vit(nn.Module):
    """HMR 2.0's ViT backbone (inference only: no drop-path); ``forward`` gives the (B, C, 16, 12) grid."""

    def __init__(
        self, height: int, width: int, dim: int, depth: int, heads: int, patch: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.patch_embed = VitPatchEmbed(patch, dim)
        grid_h, grid_w = (height + 4 - patch) // patch + 1, (width + 4 - patch) // patch + 1
        self.grid = (grid_h, grid_w)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_h * grid_w + 1, dim))
        self.blocks = nn.ModuleList(VitBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.last_norm = nn.LayerNorm(dim, eps=1e-6)
        self.width = dim

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        x, (hp, wp) = self.patch_embed(x)
        if (hp, wp) != self.grid:
            raise ValueError(
                f"HMR 2.0 ViT built for a {self.grid} grid got a {hp}x{wp} one (wrong input size)"
            )
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for block in self.blocks:
            x = block(x)
        x = self.last_norm(x)
        return x.permute(0, 2, 1).reshape(b, -1, hp, wp)


class _StandIn(dict):
    """What a checkpoint's non-tensor objects (HMR 2.0's yacs ``CfgNode`` in ``hyper_parameters``) become."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Resolves only what tensors are rebuilt from; any other class or function becomes an inert ``_StandIn``."""

    def find_class(self, module: str, name: str) -> Any:
        tensor_parts = module.startswith("torch") and (
            name.startswith("_rebuild") or name.endswith("Storage") or name in {"Size", "device", "dtype"}
        )
        if tensor_parts or (module, name) == ("collections", "OrderedDict"):
            return super().find_class(module, name)
        return _StandIn


def _tensors_only_pickle_module() -> Any:
    import types

    module = types.ModuleType("tensors_only_pickle")
    module.Unpickler = _TensorsOnlyUnpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: _TensorsOnlyUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    return module


def read_lightning_state_dict(path: str | Path) -> Mapping[str, Tensor]:
    """The ``state_dict`` of a PyTorch Lightning checkpoint, never running code from the file.

    The file is read with ``weights_only=True``; when it also pickles other objects
    (HMR 2.0 stores its yacs config in ``hyper_parameters``) it is read again by an
    unpickler that resolves only tensor-rebuilding functions and turns everything
    else into inert stand-ins: only the tensors are used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose encoder checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        ckpt = torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_tensors_only_pickle_module()
        )
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint: no 'state_dict' entry")
    return ckpt["state_dict"]


def backbone_state(state: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """The ``backbone.*`` entries of HMR 2.0's state dict, prefix removed."""
    out = {k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if not out:
        raise ValueError(f"{where} holds no '{BACKBONE_PREFIX}*' weights (not an HMR 2.0 checkpoint?)")
    return out


# -- the encoder the model uses --------------------------------------------------------------


class PoseEncoder(nn.Module):
    """A frozen pose encoder of ``cfg.kind`` → tokens (B, T, D): the pooled grid, then a global token."""

    def __init__(self, cfg: PoseEncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        if cfg.kind == "tiny_cnn":
            stride = cfg.cnn.stem_stride * 2 ** (len(cfg.cnn.widths) - 1)
            grid = (cfg.input_height // stride, cfg.input_width // stride)
            self.net: nn.Module = TinyPoseCNN(cfg.cnn.widths, cfg.cnn.stem_stride, grid)
        elif cfg.kind == "hmr2_vit":
            v = cfg.vit
            self.net = Hmr2Vit(
                cfg.input_height,
                cfg.input_width,
                v.embed_dim,
                v.depth,
                v.num_heads,
                v.patch_size,
                v.mlp_ratio,
            )
            grid = self.net.grid
        else:
            raise ValueError(f"model.pose_encoder.kind={cfg.kind} builds no encoder")
        self.width = int(self.net.width)
        pooled = (grid[0] // cfg.pool, grid[1] // cfg.pool)
        if min(pooled) < 1:
            raise ValueError(f"model.pose_encoder.pool {cfg.pool} is larger than the {grid} feature grid")
        self.num_tokens = pooled[0] * pooled[1] + 1

    def features(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Grid (B, C, h, w) and global feature (B, C) of normalised pixels."""
        if isinstance(self.net, TinyPoseCNN):
            return self.net(pixels)
        grid = self.net(pixels)
        return grid, grid.mean(dim=(2, 3))

    def forward(self, pixels: Tensor) -> Tensor:
        grid, global_feature = self.features(pixels)
        if self.cfg.pool > 1:
            grid = F.avg_pool2d(grid, self.cfg.pool)
        tokens = grid.flatten(2).transpose(1, 2)
        return torch.cat([tokens, global_feature[:, None]], dim=1)

    def load_weights(self) -> str:
        """Read ``cfg.weights`` (checked against ``cfg.sha256`` when set) into the encoder, strictly; returns its sha256."""
        path = resolve_weights(self.cfg.weights)
        if not path.is_file():
            raise FileNotFoundError(f"model.pose_encoder.weights {path} does not exist")
        actual = file_sha256(path)
        if self.cfg.sha256:
            if actual != self.cfg.sha256:
                raise ValueError(
                    f"model.pose_encoder.weights {path} has sha256 {actual}, expected {self.cfg.sha256} "
                    "(the file changed since this model was trained)"
                )
        if self.cfg.kind == "hmr2_vit":
            state: Mapping[str, Tensor] = backbone_state(read_lightning_state_dict(path), str(path))
        else:
            from safetensors.torch import load_file

            state = {
                k.removeprefix("net."): v for k, v in load_file(str(path)).items() if k.startswith("net.")
            }
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"model.pose_encoder.weights {path} does not fit the configured shape: {exc}"
            ) from exc
        return actual


class PosePathway(nn.Module):
    """The frozen pose encoder and its trained projector (LLaVA's two-layer GELU MLP) to the LM width."""

    def __init__(self, cfg: PoseEncoderConfig, hidden_size: int) -> None:
        super().__init__()
        self.encoder = PoseEncoder(cfg)
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.projector = nn.Sequential(
            nn.Linear(self.encoder.width, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    def train(self, mode: bool = True) -> PosePathway:
        # The encoder is frozen: its batch norms keep their pretrained statistics in training too.
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, pixels: Tensor) -> Tensor:
        with torch.no_grad():
            feats = self.encoder(pixels.to(next(self.encoder.parameters()).dtype))
        return self.projector(feats.to(self.projector[0].weight.dtype))


def pose_pixel_values(images: Sequence[Any], cfg: PoseEncoderConfig) -> Tensor:
    """(N, 3, H, W) ImageNet-normalised pixels of RGB ``PIL`` images for the pose encoder.

    As HMR 2.0 prepares its input: pad to a square (ImageNet mean colour), resize the
    square to the longer input side, keep the middle ``input_height x input_width``.
    """
    import numpy as np
    from PIL import Image

    from posegpt.model.vision_input import pad_to_square

    h, w = cfg.input_height, cfg.input_width
    side = max(h, w)
    out = np.empty((len(images), h, w, 3), dtype=np.float32)
    for i, image in enumerate(images):
        # Scaled down first when much larger than the input: the square canvas stays (2 x side)^2
        # whatever the image's shape (serving's memory bound, docs/serving.md).
        image = pad_to_square(image, IMAGENET_MEAN, max_side=2 * side)
        square = np.asarray(image.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        out[i] = square[top : top + h, left : left + w]
    pixels = torch.from_numpy(out).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std
