"""The pose-input tasks in the evaluation: rows read with their input poses, edits scored against
*no edit* and the caption nearest neighbour, captions by BLEU/ROUGE and R^P2T, pairs by recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posegpt.body.model import default_body_model
from posegpt.evaluation.pose_inputs import render_pose_input_examples, score_pose_input_task
from posegpt.evaluation.predict import Prediction
from posegpt.evaluation.results import MODEL, NEAREST, NO_EDIT, EvalResult, TaskResult
from posegpt.evaluation.scoring import PoseScorer
from posegpt.evaluation.shards import ShardError, TaskRows, query_of, read_task_rows, split_pose_input_row
from posegpt.metrics import pa_mpjpe
from posegpt.retrieval import TextPoseRetrieval
from tests.fixtures.evaluation import TEXT_CACHE, toy_pose_captions


def _conversation(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_query_and_inputs_follow_the_conversation_order() -> None:
    a, b, c = (np.full(72, v, np.float32) for v in (0.1, 0.2, 0.3))
    # History: a pose answered (b), then an edit of pose c; poses list every slot in text order.
    conv = _conversation("Show me.", "Here <POSE>.", "<POSE_IN> raise the arm", "Sure <POSE>.")
    prompt, given = query_of(conv, [b, c, a], "poseedit", "s")
    assert [t["content"] for t in prompt] == ["Show me.", "Here <POSE>.", "<POSE_IN> raise the arm"]
    np.testing.assert_array_equal(given, c[None])
    prompt, given, answered, _ = split_pose_input_row(conv, np.stack([b, c, a]), "poseedit", "s")
    np.testing.assert_array_equal(answered, a[None])
    # Text answers: the query is every turn before the last answer, the answer is the reference.
    diff = _conversation("How does <POSE_IN> differ from <POSE_IN>?", "Raise the left arm.")
    prompt, given, answered, reference = split_pose_input_row(diff, np.stack([a, b]), "posediff", "d")
    assert len(prompt) == 1 and reference == "Raise the left arm." and answered.shape == (0, 72)
    np.testing.assert_array_equal(given, np.stack([a, b]))
    with pytest.raises(ShardError, match="needs 2 input poses"):
        split_pose_input_row(_conversation("Describe <POSE_IN>", "x"), a[None], "posediff", "d2")
    with pytest.raises(ShardError, match="hold 2 pose tokens"):
        query_of(diff, [a], "posediff", "d3")


def test_prepared_shards_read_with_their_inputs(prepared_shards: Path) -> None:
    """The preset's shards (synthetic world with pose pairs) give each row its inputs and its target."""
    edit = read_task_rows(str(prepared_shards), "poseedit", "test", need_captions=True)
    assert len(edit) > 0 and all(len(x) == 1 for x in edit.inputs)
    assert all(p[-1]["content"].count("<POSE_IN>") == 1 for p in edit.prompts)
    # The target is not the input: synthetic pairs are kept only when their measurements differ.
    assert not np.allclose(np.stack([x[0] for x in edit.inputs]), edit.poses)
    diff = read_task_rows(str(prepared_shards), "posediff", "test")
    assert all(len(x) == 2 for x in diff.inputs) and all(r.strip() for r in diff.references)
    text = read_task_rows(str(prepared_shards), "pose2text", "test")
    np.testing.assert_array_equal(np.stack([x[0] for x in text.inputs]), text.poses)
    assert text.references == [c for c in text.captions]


def _edit_rows(n: int) -> TaskRows:
    rng = np.random.default_rng(3)
    source = (rng.normal(size=(n, 72)) * 0.2).astype(np.float32)
    source[:, 0] = np.pi
    target = source.copy()
    target[:, 3 * 16 + 2] -= 1.2  # "raise the left arm"
    target[:, 3 * 4] += rng.uniform(0.3, 1.0, size=n)  # and bend the left knee, by varied amounts
    return TaskRows(
        "poseedit",
        "test",
        [],
        [f"edit:{i}" for i in range(n)],
        ["posefix"] * n,
        target,
        [_conversation("<POSE_IN> Raise the left arm and bend the left knee.") for _ in range(n)],
        ["Raise the left arm and bend the left knee."] * n,
        [{} for _ in range(n)],
        inputs=[s[None] for s in source],
    )


def test_edits_are_scored_against_no_edit_with_independent_pa_mpjpe(tmp_path: Path) -> None:
    body = default_body_model()
    rows = _edit_rows(12)
    source = np.stack([x[0] for x in rows.inputs])
    # A model that makes half the edit, and one row without a pose (scored as no edit).
    halfway = source + 0.5 * (rows.poses - source)
    preds = {s: Prediction(halfway[i], "Sure <POSE>.") for i, s in enumerate(rows.sample_ids)}
    preds[rows.sample_ids[3]] = Prediction(None, "I cannot.")
    tres = TaskResult("poseedit", rows)
    score_pose_input_task(tres, preds, PoseScorer(body), None, lambda: rows, None, nearest_neighbour=False)

    assert set(tres.methods) == {MODEL, NO_EDIT}
    answered = halfway.copy()
    answered[3] = source[3]

    def joints(poses: np.ndarray) -> np.ndarray:
        import torch

        return body(torch.from_numpy(poses)).joints.numpy()

    expected_model = float(pa_mpjpe(joints(answered), joints(rows.poses))[1])
    expected_none = float(pa_mpjpe(joints(source), joints(rows.poses))[1])
    assert tres.methods[MODEL].means()["pa_mpjpe"] == pytest.approx(expected_model, rel=1e-4)
    assert tres.methods[NO_EDIT].means()["pa_mpjpe"] == pytest.approx(expected_none, rel=1e-4)
    assert tres.extra["pa_mpjpe_vs_no_edit"] == pytest.approx(expected_model / expected_none, rel=1e-4)
    assert tres.extra["pa_mpjpe_vs_no_edit"] < 1.0
    assert tres.methods[MODEL].missing_poses == 1 and any("no <POSE>" in n for n in tres.notes)
    metrics = EvalResult("ckpt", {"poseedit": tres}).metrics()
    assert metrics["poseedit/pa_mpjpe_vs_no_edit"] == tres.extra["pa_mpjpe_vs_no_edit"]
    assert metrics["poseedit/no_edit/pa_mpjpe"] == tres.methods[NO_EDIT].means()["pa_mpjpe"]

    from posegpt.evaluation.examples import BodyRenderer

    paths = render_pose_input_examples(tres, BodyRenderer(body, 96), tmp_path)
    assert set(paths) == {"best", "median", "worst"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())


@pytest.mark.slow  # trains the session's retrieval model when no other test has
def test_captions_pairs_and_the_edit_neighbour(trained_retrieval: Path) -> None:
    retrieval = TextPoseRetrieval.load(trained_retrieval, cache_dir=TEXT_CACHE)
    poses, captions = toy_pose_captions(30, seed=41)
    n = len(poses)
    ids = [f"p2t:{i}" for i in range(n)]
    rows = TaskRows(
        "pose2text",
        "test",
        [],
        ids,
        ["posescript"] * n,
        poses,
        [_conversation("Describe <POSE_IN>") for _ in range(n)],
        list(captions),
        [{} for _ in range(n)],
        inputs=[p[None] for p in poses],
        references=list(captions),
    )
    # Half the answers are right, the others another row's caption.
    answers = list(captions)
    for i in range(0, n, 2):
        answers[i] = captions[(i + 1) % n]
    preds = {s: Prediction(None, answers[i]) for i, s in enumerate(ids)}
    tres = TaskResult("pose2text", rows)
    score_pose_input_task(tres, preds, PoseScorer(default_body_model()), retrieval, lambda: rows, None, False)
    recalls = tres.methods[MODEL].recalls
    assert recalls is not None and tres.gt_recalls is not None
    expected = retrieval.recalls(answers, poses)
    assert recalls.pose_to_text[10] == pytest.approx(expected.pose_to_text[10])
    assert tres.gt_recalls.pose_to_text[10] >= recalls.pose_to_text[10]
    assert 0 < tres.extra["bleu4"] < 100 and 0 < tres.extra["rougeL"] < 100

    # posediff: the same answers against the references as pairs; right answers rank their own pair first.
    diff = TaskRows(
        "posediff",
        "test",
        [],
        ids,
        ["posefix"] * n,
        poses,
        rows.prompts,
        list(captions),
        rows.meta,
        inputs=[np.stack([p, p]) for p in poses],
        references=list(captions),
    )
    tres = TaskResult("posediff", diff)
    score_pose_input_task(tres, preds, PoseScorer(default_body_model()), retrieval, lambda: diff, None, False)
    q, r = retrieval.embed_texts(answers), retrieval.embed_texts(list(captions))
    sim = q @ r.T
    own = np.array([np.sum(sim[i] > sim[i, i]) < 10 for i in range(n)])
    assert tres.extra["pair_r_10"] == pytest.approx(100 * own.mean(), abs=100 / n)
    assert tres.extra["pair_r_10_chance"] == pytest.approx(100 * 10 / n)

    # poseedit's nearest neighbour answers with the target of the training edit whose instruction is nearest.
    edits = _edit_rows(8)
    preds = {s: Prediction(edits.poses[i], "<POSE>") for i, s in enumerate(edits.sample_ids)}
    tres = TaskResult("poseedit", edits)
    score_pose_input_task(tres, preds, PoseScorer(default_body_model()), retrieval, lambda: edits, None, True)
    assert NEAREST in tres.methods and tres.methods[MODEL].means()["pa_mpjpe"] == pytest.approx(0.0, abs=1e-3)
    assert "nearest_neighbour/pa_mpjpe_vs_no_edit" in tres.extra
