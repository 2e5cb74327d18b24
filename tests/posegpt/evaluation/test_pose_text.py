"""Pose-input task metrics against computations written here from their definitions."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from posegpt.evaluation.pose_text import caption_scores, edit_errors, pair_recalls, tokenize


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu(hyps: list[list[str]], refs: list[list[list[str]]], max_n: int) -> float:
    """Papineni et al.: clipped n-gram precisions over the corpus, geometric mean, brevity penalty."""
    logs = []
    for n in range(1, max_n + 1):
        hit = total = 0
        for h, rs in zip(hyps, refs, strict=True):
            counts = _ngrams(h, n)
            most = Counter()
            for r in rs:
                most |= _ngrams(r, n)
            hit += sum(min(c, most[g]) for g, c in counts.items())
            total += sum(counts.values())
        logs.append(math.log(hit / total))
    c = sum(len(h) for h in hyps)
    r = sum(
        min((len(x) for x in rs), key=lambda L: (abs(L - len(h)), L))
        for h, rs in zip(hyps, refs, strict=True)
    )
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return 100.0 * bp * math.exp(sum(logs) / max_n)


def _rouge_l(hyp: list[str], ref: list[str]) -> float:
    table = [[0] * (len(ref) + 1) for _ in range(len(hyp) + 1)]
    for i, a in enumerate(hyp):
        for j, b in enumerate(ref):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    p, r = lcs / len(hyp), lcs / len(ref)
    return 0.0 if lcs == 0 else 2 * p * r / (p + r)


def test_caption_scores_match_the_definitions() -> None:
    preds = ["the arm is up and the leg is out.", "put the leg on the box and the arm up"]
    refs = [["the arm is up and one leg is out.", "arm up"], "put one leg on the box , the arm up"]
    scores = caption_scores(preds, refs)
    hyps = [tokenize(p) for p in preds]
    ref_tokens = [[tokenize(r) for r in refs[0]], [tokenize(refs[1])]]
    assert scores.bleu1 == pytest.approx(_bleu(hyps, ref_tokens, 1), abs=1e-9)
    assert scores.bleu4 == pytest.approx(_bleu(hyps, ref_tokens, 4), abs=1e-9)
    # rouge_score drops punctuation; best reference per sample, mean over samples.
    words = lambda t: [w for w in tokenize(t) if w.isalnum()]  # noqa: E731
    expect = np.mean(
        [max(_rouge_l(words(preds[0]), words(r)) for r in refs[0]), _rouge_l(words(preds[1]), words(refs[1]))]
    )
    assert scores.rouge_l == pytest.approx(100 * expect, abs=1e-9)
    perfect = caption_scores(["Raise the left arm."], ["raise the left arm ."])
    assert perfect.bleu4 == pytest.approx(100.0) and perfect.rouge_l == pytest.approx(100.0)
    with pytest.raises(ValueError, match="references\\[0\\] is empty"):
        caption_scores(["x"], [""])
    with pytest.raises(ValueError, match="2 generated texts for 1"):
        caption_scores(["a", "b"], ["a"])


def _pa_mpjpe_numpy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Umeyama (1991) similarity fit of each pred onto gt, mean joint distance in mm."""
    out = []
    for x, y in zip(pred, gt, strict=True):
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        u, s, vt = np.linalg.svd(yc.T @ xc / len(x))
        d = np.ones(3)
        d[-1] = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag(d) @ vt
        scale = (s * d).sum() / (xc**2).sum(1).mean()
        aligned = scale * xc @ rot.T + my
        out.append(np.linalg.norm(aligned - y, axis=1).mean() * 1000)
    return float(np.mean(out))


def test_edit_errors_against_numpy_procrustes() -> None:
    rng = np.random.default_rng(3)
    target = rng.normal(0, 0.3, (6, 24, 3))
    source = target + rng.normal(0, 0.08, target.shape)
    neighbour = rng.normal(0, 0.3, target.shape)
    # A prediction that is the target up to scale, rotation and translation: PA-MPJPE 0.
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    predicted = 1.3 * target @ q.T + np.array([0.2, -1.0, 3.0])
    errors = edit_errors(predicted, target, source, neighbour)
    assert errors.model == pytest.approx(0.0, abs=1e-3)
    assert errors.no_edit == pytest.approx(_pa_mpjpe_numpy(source, target), rel=1e-6)
    assert errors.nearest_neighbour == pytest.approx(_pa_mpjpe_numpy(neighbour, target), rel=1e-6)
    assert errors.count == 6 and errors.vs_no_edit == pytest.approx(errors.model / errors.no_edit)
    assert set(edit_errors(source, target, source).as_metrics("poseedit/")) == {
        "poseedit/pa_mpjpe",
        "poseedit/no_edit_pa_mpjpe",
        "poseedit/pa_mpjpe_vs_no_edit",
    }
    assert edit_errors(source, target, source).vs_no_edit == pytest.approx(1.0)


def test_pair_recalls_rank_the_right_pair() -> None:
    rng = np.random.default_rng(5)
    pairs = rng.normal(size=(40, 8))
    queries = pairs + rng.normal(0, 0.9, pairs.shape)
    recalls = pair_recalls(queries * 7.0, pairs, ks=(1, 5))  # cosine: the scale of a row does not matter
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        pairs / np.linalg.norm(pairs, axis=1, keepdims=True)
    ).T
    for k in (1, 5):
        ranks = [int((cos[i] > cos[i, i]).sum()) for i in range(40)]
        assert recalls.text_to_pose[k] == pytest.approx(100 * np.mean([r < k for r in ranks]))
        ranks = [int((cos[:, i] > cos[i, i]).sum()) for i in range(40)]
        assert recalls.pose_to_text[k] == pytest.approx(100 * np.mean([r < k for r in ranks]))
    assert 0 < recalls.text_to_pose[1] < 100
    with pytest.raises(ValueError, match="matching"):
        pair_recalls(queries[:3], pairs)
