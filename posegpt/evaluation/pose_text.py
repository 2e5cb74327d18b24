"""Metrics of the pose-input tasks: ``pose2text`` captions, ``poseedit`` poses, ``posediff`` pair retrieval.

``pose2text``'s R^P2T needs nothing new: ``TextPoseRetrieval.recalls(generated captions, input
poses).pose_to_text`` over the test split, next to the same call with the reference captions
(the ceiling) and ``posegpt.retrieval.chance_recall``.

- Captions (``pose2text``, and the modifier texts of ``posediff``): corpus BLEU-1 and BLEU-4
  (``nltk.translate.bleu_score.corpus_bleu``, smoothing method 1 so a small test set without a
  matching 4-gram does not read as exactly 0) on lower-cased word / punctuation tokens, and the
  mean ROUGE-L F-measure (Google's ``rouge_score``, Porter stemming), best over a sample's
  references. All ×100, as PoseScript's and PoseFix's tables print them.
- Edits (``poseedit``): PA-MPJPE (mm, ``posegpt.metrics.pa_mpjpe``) of the predicted pose to
  the target pose B, next to two baselines on the same rows: *no edit* (answer pose A) and the
  *caption nearest neighbour* (the target pose of the training pair whose modifier embeds
  nearest, ``posegpt.evaluation.baselines.NearestNeighbour`` given those poses and modifiers).
- Pair retrieval (``posediff``): R@K of the right pair among the test pairs, from query and
  pair embeddings whose row ``i`` match (``posegpt.retrieval.recalls_from_similarity`` on
  cosine similarities, ties counted in expectation). With no pair–text retrieval model, the
  pair side can be the embedding of each pair's reference modifier (text-to-text retrieval).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from posegpt.metrics import pa_mpjpe
from posegpt.retrieval import RECALL_KS, RetrievalRecalls, recalls_from_similarity

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (BLEU's tokenization here)."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class CaptionScores:
    """Corpus BLEU and mean ROUGE-L of generated texts against references (×100)."""

    bleu1: float
    bleu4: float
    rouge_l: float
    count: int

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}bleu1": self.bleu1, f"{prefix}bleu4": self.bleu4, f"{prefix}rougeL": self.rouge_l}


def _references(references: Sequence[str | Sequence[str]], n: int) -> list[list[str]]:
    if len(references) != n:
        raise ValueError(f"got {n} generated texts for {len(references)} references")
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise ValueError(f"references[{i}] is empty: every sample needs at least one non-empty reference")
        out.append(refs)
    return out


def caption_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> CaptionScores:
    """BLEU-1/4 and ROUGE-L of ``predictions[i]`` against ``references[i]`` (a text or several)."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
    from rouge_score import rouge_scorer

    if not predictions:
        raise ValueError("no generated texts to score")
    refs = _references(references, len(predictions))
    hyp_tokens = [tokenize(p or "") for p in predictions]
    ref_tokens = [[tokenize(r) for r in rs] for rs in refs]
    smooth = SmoothingFunction().method1
    bleu1 = corpus_bleu(ref_tokens, hyp_tokens, weights=(1.0,), smoothing_function=smooth)
    bleu4 = corpus_bleu(ref_tokens, hyp_tokens, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smooth)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [
        scorer.score_multi(rs, p or "")["rougeL"].fmeasure for p, rs in zip(predictions, refs, strict=True)
    ]
    return CaptionScores(100.0 * bleu1, 100.0 * bleu4, 100.0 * float(np.mean(rouge)), len(predictions))


@dataclass(frozen=True)
class EditErrors:
    """Mean PA-MPJPE (mm) to the target pose of the model and of the baselines, on the same rows."""

    model: float
    no_edit: float
    nearest_neighbour: float | None
    count: int

    @property
    def vs_no_edit(self) -> float:
        """The model's error over the *no edit* baseline's (issue 17's target: ≤ 0.7)."""
        return self.model / self.no_edit if self.no_edit > 0 else float("inf")

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        out = {
            f"{prefix}pa_mpjpe": self.model,
            f"{prefix}no_edit_pa_mpjpe": self.no_edit,
            f"{prefix}pa_mpjpe_vs_no_edit": self.vs_no_edit,
        }
        if self.nearest_neighbour is not None:
            out[f"{prefix}nn_pa_mpjpe"] = self.nearest_neighbour
        return out


def edit_errors(
    predicted_joints: Tensor | np.ndarray,
    target_joints: Tensor | np.ndarray,
    source_joints: Tensor | np.ndarray,
    neighbour_joints: Tensor | np.ndarray | None = None,
) -> EditErrors:
    """PA-MPJPE of the edited poses (B, J, 3 joints) to the targets, and of the two baselines.

    ``source_joints``: pose A of each row (the *no edit* answer); ``neighbour_joints``: the
    caption nearest neighbour's answer, when there is one.
    """
    model = float(pa_mpjpe(predicted_joints, target_joints)[1])
    no_edit = float(pa_mpjpe(source_joints, target_joints)[1])
    nn = None if neighbour_joints is None else float(pa_mpjpe(neighbour_joints, target_joints)[1])
    return EditErrors(model, no_edit, nn, int(np.shape(target_joints)[0]))


def pair_recalls(
    query_embeddings: np.ndarray, pair_embeddings: np.ndarray, ks: Sequence[int] = RECALL_KS
) -> RetrievalRecalls:
    """R@K (%) of the right pair: row ``i`` of both matrices is one test pair; cosine similarity ranks.

    ``text_to_pose`` holds query → pair recalls, ``pose_to_text`` pair → query ones.
    """
    q = np.asarray(query_embeddings, dtype=np.float64)
    p = np.asarray(pair_embeddings, dtype=np.float64)
    if q.ndim != 2 or q.shape != p.shape or q.shape[0] == 0:
        raise ValueError(
            f"query and pair embeddings must be matching (N, D) arrays, got {q.shape} and {p.shape}"
        )
    if not (np.isfinite(q).all() and np.isfinite(p).all()):
        raise ValueError("embeddings hold NaN or inf")
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    pn = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    return recalls_from_similarity(qn @ pn.T, ks)
