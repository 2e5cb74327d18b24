"""Scoring one task as the runner does: SPG gets the retrieval recalls text2pose gets, over its own gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posegpt.body.model import default_body_model
from posegpt.evaluation.config import EvalConfig
from posegpt.evaluation.predict import Prediction
from posegpt.evaluation.results import MEAN_POSE, MODEL, TaskResult
from posegpt.evaluation.runner import _score_task
from posegpt.evaluation.scoring import PoseScorer
from posegpt.evaluation.shards import TaskRows
from posegpt.retrieval import TextPoseRetrieval
from tests.fixtures.evaluation import TEXT_CACHE, toy_pose_captions


def _recall_t2p(sim: np.ndarray, k: int) -> float:
    """R^T2P (%) with ties broken at random, in expectation, one query (row) at a time."""
    hits = []
    for i, row in enumerate(sim):
        beaten_by = int(np.sum(row > row[i]))
        tied_with = int(np.sum(row == row[i])) - 1
        hits.append(min(max((k - beaten_by) / (tied_with + 1), 0.0), 1.0))
    return 100 * float(np.mean(hits))


@pytest.mark.slow  # trains the session's retrieval model when no other test has
def test_spg_is_scored_by_recall_over_its_own_gallery(trained_retrieval: Path) -> None:
    gt, captions = toy_pose_captions(30, seed=31)
    n = len(gt)
    rows = TaskRows(
        "spg",
        "test",
        [],
        [f"spg:{i}" for i in range(n)],
        ["posescript"] * n,
        gt,
        [[{"role": "user", "content": c}] for c in captions],
        list(captions),
        [{} for _ in range(n)],
    )
    # A generator that gets half of the rows right and answers the others with another row's pose.
    rng = np.random.default_rng(0)
    generated = gt.copy()
    wrong = rng.choice(n, size=n // 2, replace=False)
    generated[wrong] = gt[np.roll(wrong, 1)]
    preds = {s: Prediction(generated[i], "Sure, it is <POSE>.") for i, s in enumerate(rows.sample_ids)}
    retrieval = TextPoseRetrieval.load(trained_retrieval, cache_dir=TEXT_CACHE)
    tres = TaskResult("spg", rows)
    mean = gt.mean(axis=0)
    _score_task(EvalConfig(), tres, preds, {}, mean, PoseScorer(default_body_model()), retrieval, None)

    model = tres.methods[MODEL].recalls
    assert model is not None and model.gallery_size == n
    sim = retrieval.similarity(captions, generated)
    for k in (5, 10, 20):
        assert model.text_to_pose[k] == pytest.approx(_recall_t2p(sim, k), abs=1e-9)
        assert model.pose_to_text[k] == pytest.approx(_recall_t2p(sim.T, k), abs=1e-9)
    ceiling = tres.gt_recalls
    assert ceiling is not None
    assert ceiling.text_to_pose[5] == pytest.approx(
        _recall_t2p(retrieval.similarity(captions, gt), 5), abs=1e-9
    )
    # One pose for every text ranks at chance: K of N.
    assert tres.methods[MEAN_POSE].recalls.text_to_pose[10] == pytest.approx(100 * 10 / n)  # type: ignore[union-attr]
