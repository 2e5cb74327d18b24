"""Scoring and rendered examples of the pose-input tasks (the model is given poses).

- ``poseedit`` (pose A + an instruction → pose B): the model's pose against the target B with
  the same per-sample metrics as every pose task (``PoseScorer``), next to the baselines *no
  edit* (answer pose A) and the *caption nearest neighbour* (the target pose of the training
  edit whose instruction embeds nearest in the retrieval model's text space), plus the mean
  training target when ``baselines.mean_pose`` is on. An answer without ``<POSE>`` is scored as
  no edit. ``poseedit/pa_mpjpe_vs_no_edit`` is issue 17's target ratio (≤ 0.7).
- ``pose2text`` (a pose → its description): R^P2T / R^T2P of the generated descriptions against
  the input poses, the whole test split as gallery, with the text–pose retrieval model; the same
  with the reference captions is the ceiling (``gt``), and chance is K / N. BLEU-1/4 and ROUGE-L
  against the reference caption (``posegpt.evaluation.pose_text``).
- ``posediff`` (poses A and B → how A must change to become B): *pair recall*. Each test row is a
  pair; the model's text for row i is embedded with the retrieval model's text encoder, as are the
  reference modifiers of all N test pairs; the pairs are ranked by cosine similarity and R@K is
  the share of rows whose own pair is among the top K (chance K / N). Text-to-text, since no
  pair–text retrieval model is trained here. Plus BLEU/ROUGE against the reference modifier.

Every number lands in ``TaskResult.extra`` (``<task>/<name>`` in MLflow) or, for the pose
metrics and R^P2T, in the tables every task shares.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from posegpt.evaluation.baselines import NearestNeighbour
from posegpt.evaluation.examples import BodyRenderer, pick_cases, text_panel
from posegpt.evaluation.pose_text import caption_scores, pair_recalls
from posegpt.evaluation.predict import Prediction
from posegpt.evaluation.results import MEAN_POSE, MODEL, NEAREST, NO_EDIT, MethodResult, TaskResult
from posegpt.evaluation.scoring import PoseScorer, SampleScores, grouped_means
from posegpt.evaluation.shards import TaskRows
from posegpt.render import save_png, side_by_side
from posegpt.retrieval import RECALL_KS, TextPoseRetrieval, chance_recall

NO_ANSWER = "(no answer)"
"""What an empty generated text is embedded as (the text encoder needs a word)."""


def score_pose_input_task(
    tres: TaskResult,
    preds: dict[str, Prediction],
    scorer: PoseScorer,
    retrieval: TextPoseRetrieval | None,
    train_rows: Callable[[], TaskRows],
    mean_pose: np.ndarray | None,
    nearest_neighbour: bool,
) -> None:
    """Fill ``tres`` for ``poseedit``, ``pose2text`` or ``posediff`` (see the module docstring).

    ``train_rows`` gives the task's training rows (read only for the edit's nearest neighbour).
    """
    rows = tres.rows
    tres.answers = [preds[sid].text for sid in rows.sample_ids]
    if tres.task == "poseedit":
        _score_edit(tres, preds, scorer, retrieval, train_rows, mean_pose, nearest_neighbour)
        return
    references = rows.references
    scores = caption_scores(tres.answers, references)
    tres.extra.update(scores.as_metrics())
    queries = [a or NO_ANSWER for a in tres.answers]
    if retrieval is None:
        tres.notes.append("no retrieval model: recalls not computed")
        return
    if tres.task == "pose2text":
        described = rows.poses  # each row's input pose
        tres.methods[MODEL] = MethodResult(
            MODEL, SampleScores(rows.sample_ids), recalls=retrieval.recalls(queries, described)
        )
        tres.gt_recalls = retrieval.recalls(references, described)
        return
    pairs = pair_recalls(retrieval.embed_texts(queries), retrieval.embed_texts(references))
    for k in RECALL_KS:
        tres.extra[f"pair_r_{k}"] = pairs.text_to_pose[k]
        tres.extra[f"pair_r_{k}_chance"] = chance_recall(k, len(rows))


def _score_edit(
    tres: TaskResult,
    preds: dict[str, Prediction],
    scorer: PoseScorer,
    retrieval: TextPoseRetrieval | None,
    train_rows: Callable[[], TaskRows],
    mean_pose: np.ndarray | None,
    nearest_neighbour: bool,
) -> None:
    rows = tres.rows
    source = np.stack([given[0] for given in rows.inputs]).astype(np.float32)
    model = source.copy()
    missing = 0
    for i, sid in enumerate(rows.sample_ids):
        if preds[sid].pose is None:
            missing += 1
        else:
            model[i] = preds[sid].pose
    methods: dict[str, tuple[np.ndarray, int]] = {MODEL: (model, missing), NO_EDIT: (source, 0)}
    if missing:
        tres.notes.append(f"{missing} of {len(rows)} answers had no <POSE>; they are scored as no edit")
    if nearest_neighbour and retrieval is not None:
        train = train_rows()
        instructions = [c or "" for c in train.captions]
        nearest = NearestNeighbour(retrieval, train.poses, instructions)
        methods[NEAREST] = (nearest.predict([c or NO_ANSWER for c in rows.captions]), 0)
    if mean_pose is not None:
        methods[MEAN_POSE] = (np.repeat(mean_pose[None], len(rows), axis=0), 0)
    for method, (poses, missed) in methods.items():
        scores = scorer.score(rows.sample_ids, poses, rows.poses)
        result = MethodResult(method, scores, missing_poses=missed, poses=np.asarray(poses, np.float32))
        result.by_source = grouped_means(scores, rows.sources)
        tres.methods[method] = result
    no_edit = tres.methods[NO_EDIT].means()["pa_mpjpe"]
    for method in (MODEL, NEAREST):
        if method in tres.methods:
            name = "pa_mpjpe_vs_no_edit" if method == MODEL else f"{method}/pa_mpjpe_vs_no_edit"
            tres.extra[name] = tres.methods[method].means()["pa_mpjpe"] / max(no_edit, 1e-9)


def render_pose_input_examples(tres: TaskResult, renderer: BodyRenderer, report_dir: Path) -> dict[str, Path]:
    """Best / median / worst rows drawn side by side: for ``poseedit`` pose A, the instruction, the
    prediction and the target B (by the model's PA-MPJPE); for the text tasks the input pose(s), the
    generated text and the reference (the rows at the start, middle and end of the split)."""
    rows = tres.rows
    size = renderer.size
    if tres.task == "poseedit":
        model = tres.methods[MODEL]
        cases = pick_cases(model.scores.values["pa_mpjpe"])
    else:
        n = len(rows)
        cases = {"first": 0, "middle": (n - 1) // 2, "last": n - 1}
    out: dict[str, Path] = {}
    for case, i in cases.items():
        given = rows.inputs[i]
        panels = [renderer.views(p) for p in given]
        titles = (
            ["pose A", "pose B"][: len(given)]
            if len(given) > 1
            else ["pose A" if tres.task == "poseedit" else "input pose"]
        )
        if tres.task == "poseedit":
            err = tres.methods[MODEL].scores.values["pa_mpjpe"][i]
            panels += [text_panel(rows.captions[i] or "", size)]
            titles += ["instruction"]
            assert tres.methods[MODEL].poses is not None
            panels += [renderer.views(tres.methods[MODEL].poses[i]), renderer.views(rows.poses[i])]
            titles += [f"prediction ({case}: {err:.0f} mm)", "target B"]
        else:
            panels += [text_panel(tres.answers[i] or NO_ANSWER, size), text_panel(rows.references[i], size)]
            titles += [f"generated ({case})", "reference"]
        path = report_dir / "examples" / f"{tres.task}_{case}.png"
        out[case] = save_png(path, side_by_side(panels, titles, height=size))
    return out
