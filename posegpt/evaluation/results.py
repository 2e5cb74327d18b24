"""What an evaluation measured: per task, per method (the model and each baseline).

Methods: ``model`` (the checkpoint's answers), ``mean_pose``, ``nearest_neighbour``
and, for RPE, ``model_gt_crop`` (the model given the ground-truth crop) and
``model_detected_crop`` (the model given the detected crop of the described person). Flat
metric names, as logged to MLflow: ``<task>/<metric>`` for the model,
``<task>/<method>/<metric>`` for baselines, ``<task>/by_source/<source>/<metric>``
and ``<task>/by_type/<type>/<metric>`` for groups, ``text2pose/gt/r_t2p_5`` for the
retrieval model's own recall on ground-truth poses (the ceiling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posegpt.evaluation.scoring import SampleScores
from posegpt.evaluation.shards import TaskRows
from posegpt.retrieval import RetrievalRecalls

MODEL = "model"
MEAN_POSE = "mean_pose"
NEAREST = "nearest_neighbour"
GT_CROP = "model_gt_crop"
DETECTED_CROP = "model_detected_crop"
NO_EDIT = "no_edit"
GT = "gt"
METHOD_TITLES: dict[str, str] = {
    MODEL: "model",
    MEAN_POSE: "mean training pose",
    NEAREST: "nearest neighbour (caption)",
    GT_CROP: "model, ground-truth crop",
    DETECTED_CROP: "model, detected crop",
    NO_EDIT: "no edit (pose A)",
    GT: "ground-truth poses (ceiling)",
}


def metric_key(name: str) -> str:
    """A name MLflow accepts (letters, digits, ``_-. /:``)."""
    return re.sub(r"[^\w.\- /:]", "_", name)


@dataclass
class MethodResult:
    """One method's answers on one task."""

    method: str
    scores: SampleScores
    missing_poses: int = 0
    """Answers without a ``<POSE>`` (scored with the fallback pose)."""
    recalls: RetrievalRecalls | None = None
    """R^T2P / R^P2T with this method's poses in place of the ground truth (text2pose, spg)."""
    poses: np.ndarray | None = None
    """(N, 72) the poses scored, in row order (fallback poses included), for the per-sample report."""
    by_source: dict[str, dict[str, float]] = field(default_factory=dict)
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        return self.scores.means()


@dataclass
class TaskResult:
    """Every method on one task."""

    task: str
    rows: TaskRows
    methods: dict[str, MethodResult] = field(default_factory=dict)
    gt_recalls: RetrievalRecalls | None = None
    """The retrieval model's recall on ground-truth poses: what a perfect generator would get."""
    joints: np.ndarray | None = None
    """(N, 14, 3) ground-truth joints (metres) of a joints-only source, whose rows have no pose."""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    """Task-specific numbers beyond the pose tables (pose-input tasks: BLEU/ROUGE, pair recall, ratios to
    the *no edit* baseline), logged as ``<task>/<name>``."""
    answers: list[str] | None = None
    """The model's answer text per row (pose-input tasks), for the per-sample report."""


@dataclass
class EvalResult:
    """The whole evaluation."""

    checkpoint: str
    tasks: dict[str, TaskResult]
    skipped: dict[str, str] = field(default_factory=dict)
    """Tasks not scored, with the reason."""
    report_dir: Path | None = None
    run_id: str | None = None
    train_run_id: str | None = None
    samples: int = 0
    """Rows the model answered (every task, the crop baseline included)."""
    predict_seconds: float = 0.0
    """Wall time of the Ray prediction pipeline (reading, actor start-up, generation)."""
    generation_seconds: float = 0.0
    """Time inside the actors' generation batches, summed over actors."""
    retrieval_dir: Path | None = None
    retrieval_chance: dict[int, float] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.predict_seconds if self.predict_seconds > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        """Flat ``name → value`` of every number (see the module docstring for names)."""
        out: dict[str, float] = {}
        for task, tr in self.tasks.items():
            for method, mr in tr.methods.items():
                prefix = f"{task}/" if method == MODEL else f"{task}/{method}/"
                for name, value in mr.means().items():
                    out[metric_key(prefix + name)] = value
                if mr.recalls is not None:
                    for name, value in mr.recalls.as_metrics().items():
                        out[metric_key(prefix + name)] = value
                if method == MODEL:
                    if mr.scores.values:  # a task answered in words has no pose to miss
                        out[metric_key(f"{task}/missing_pose_rate")] = mr.missing_poses / max(len(tr.rows), 1)
                    for group_kind, groups in (("by_source", mr.by_source), ("by_type", mr.by_type)):
                        for group, values in groups.items():
                            for name, value in values.items():
                                out[metric_key(f"{task}/{group_kind}/{group}/{name}")] = value
            if tr.gt_recalls is not None:
                for name, value in tr.gt_recalls.as_metrics().items():
                    out[metric_key(f"{task}/{GT}/{name}")] = value
            for name, value in tr.extra.items():
                out[metric_key(f"{task}/{name}")] = value
            out[metric_key(f"{task}/samples")] = float(len(tr.rows))
        out["samples_per_second"] = self.samples_per_second
        out["predict_seconds"] = self.predict_seconds
        out["generation_seconds"] = self.generation_seconds
        return out
