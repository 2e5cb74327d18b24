"""The report folder: Markdown, metric and baseline tables (CSV, JSON), per-sample predictions.

Layout of ``<report_dir>``::

    report.md            everything below in one page, examples inlined
    metrics.json         flat name → value (the numbers logged to MLflow)
    metrics.csv          task, method, group, metric, value (long format)
    baselines.csv        one row per task and method, metrics side by side
    retrieval.csv        recalls of every method and the ceiling, with chance
    predictions/<task>.csv  per-sample ids, the question asked, errors, and the model's pose (``model/pose``: 72
                         axis-angle values, space-separated, exact float32 round trip); for the pose-input
                         tasks also the answer text (``model/text``) and the reference
    examples/<task>_<case>.png  best / median / worst rendered examples
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posegpt.evaluation.results import GT, METHOD_TITLES, MODEL, EvalResult
from posegpt.evaluation.scoring import METRIC_UNITS
from posegpt.retrieval import RECALL_KS

TABLE_METRICS: tuple[str, ...] = ("mpjpe", "pa_mpjpe", "mpjre_x100", "mpjpe_14", "pa_mpjpe_14")
METRIC_TITLES: dict[str, str] = {
    "mpjpe": "MPJPE",
    "pa_mpjpe": "PA-MPJPE",
    "mpjre_x100": "MPJRE×100",
    "mpjpe_14": "MPJPE (H36M 14)",
    "pa_mpjpe_14": "PA-MPJPE (H36M 14)",
}


def _fmt(v: float | None, decimals: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{decimals}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _metric_columns(result: EvalResult) -> list[str]:
    present = {m for tr in result.tasks.values() for mr in tr.methods.values() for m in mr.scores.values}
    return [m for m in TABLE_METRICS if m in present]


def baseline_rows(result: EvalResult) -> list[dict[str, Any]]:
    """One dict per (task, method): the metric means."""
    out = []
    for task, tr in result.tasks.items():
        for method, mr in tr.methods.items():
            out.append({"task": task, "method": method, "samples": len(tr.rows), **mr.means()})
    return out


def retrieval_rows(result: EvalResult) -> list[dict[str, Any]]:
    out = []
    for task, tr in result.tasks.items():
        entries = [(GT, tr.gt_recalls)] + [(m, mr.recalls) for m, mr in tr.methods.items()]
        for method, rec in entries:
            if rec is None:
                continue
            out.append({"task": task, "method": method, "gallery": rec.gallery_size, **rec.as_metrics()})
        if tr.gt_recalls is not None:
            n = tr.gt_recalls.gallery_size
            chance = {f"r_t2p_{k}": 100.0 * min(k, n) / n for k in RECALL_KS}
            chance |= {f"r_p2t_{k}": 100.0 * min(k, n) / n for k in RECALL_KS}
            out.append(
                {
                    "task": task,
                    "method": "chance",
                    "gallery": n,
                    **chance,
                    "r_mean": sum(chance.values()) / len(chance),
                }
            )
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_report(
    result: EvalResult, report_dir: Path, decimals: int, examples: dict[str, dict[str, Path]]
) -> Path:
    """Write every file of the report folder; returns the Markdown file."""
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = result.metrics()
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, allow_nan=True))
    long_rows = []
    for task, tr in result.tasks.items():
        for method, mr in tr.methods.items():
            for name, value in mr.means().items():
                long_rows.append(
                    {"task": task, "method": method, "group": "all", "metric": name, "value": value}
                )
            for kind, groups in (("source", mr.by_source), ("type", mr.by_type)):
                for group, values in groups.items():
                    for name, value in values.items():
                        long_rows.append(
                            {
                                "task": task,
                                "method": method,
                                "group": f"{kind}:{group}",
                                "metric": name,
                                "value": value,
                            }
                        )
    _write_csv(report_dir / "metrics.csv", long_rows)
    _write_csv(report_dir / "baselines.csv", baseline_rows(result))
    rec_rows = retrieval_rows(result)
    if rec_rows:
        _write_csv(report_dir / "retrieval.csv", rec_rows)
    pred_dir = report_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for task, tr in result.tasks.items():
        rows = []
        for i, sid in enumerate(tr.rows.sample_ids):
            row: dict[str, Any] = {"sample_id": sid, "source": tr.rows.sources[i]}
            # The question as the model was asked it (a template preset may rephrase the shard's).
            row["question"] = tr.rows.prompts[i][-1]["content"] if tr.rows.prompts[i] else ""
            for method, mr in tr.methods.items():
                for name, v in mr.scores.values.items():
                    row[f"{method}/{name}"] = float(v[i])
            if tr.answers is not None:
                row[f"{MODEL}/text"] = tr.answers[i]
                if tr.rows.references:
                    row["reference"] = tr.rows.references[i]
            model = tr.methods.get(MODEL)
            if model is not None and model.poses is not None:
                # repr of each float32 as a double reads back bit-exactly: the poses behind every metric.
                row[f"{MODEL}/pose"] = " ".join(repr(float(v)) for v in model.poses[i])
            rows.append(row)
        _write_csv(pred_dir / f"{task}.csv", rows)
    md = report_dir / "report.md"
    md.write_text(render_markdown(result, decimals, examples, report_dir))
    return md


def render_markdown(
    result: EvalResult, decimals: int, examples: dict[str, dict[str, Path]], report_dir: Path
) -> str:
    cols = _metric_columns(result)
    units = [f"{METRIC_TITLES[m]} ({METRIC_UNITS[m]})" for m in cols]
    parts = [f"# Evaluation of `{result.checkpoint}`", ""]
    if result.run_id:
        parts.append(
            f"MLflow run `{result.run_id}`"
            + (f", child of training run `{result.train_run_id}`." if result.train_run_id else ".")
        )
    parts.append(
        f"Model answers: {result.samples} rows in {result.predict_seconds:.1f} s "
        f"({result.samples_per_second:.2f} samples/s, Ray actor start-up included)."
    )
    parts += [
        "",
        "Errors: joints of the body model with betas 0; MPJPE after subtracting the pelvis, "
        "PA-MPJPE after a per-sample similarity Procrustes fit, MPJRE = mean geodesic angle over the 24 joints (×100). "
        "H36M 14: SPIN's 14 joints regressed from the mesh, minus the regressed pelvis (joints-only sources: "
        "against SPIN's 3D joints, no pose, so no MPJRE).",
        "",
    ]

    parts += ["## Model and baselines", ""]
    rows = []
    for task, tr in result.tasks.items():
        for method, mr in tr.methods.items():
            means = mr.means()
            if not means:
                continue  # answered in words: its numbers are below
            rows.append(
                [task, METHOD_TITLES.get(method, method), str(len(tr.rows))]
                + [_fmt(means.get(m), decimals) for m in cols]
            )
    parts += [markdown_table(["task", "method", "samples", *units], rows), ""]

    rec = retrieval_rows(result)
    if rec:
        parts += [
            "## Retrieval recall (PoseScript protocol)",
            "",
            "A text–pose retrieval model trained on ground-truth training poses ranks each task's whole test split "
            "(text2pose: captions; spg: the implicit descriptions); each method's poses stand in for the ground "
            "truth. The ground-truth row is the ceiling.",
            "",
        ]
        keys = [f"r_t2p_{k}" for k in RECALL_KS] + [f"r_p2t_{k}" for k in RECALL_KS] + ["r_mean"]
        titles = [f"R^T2P@{k}" for k in RECALL_KS] + [f"R^P2T@{k}" for k in RECALL_KS] + ["mean"]
        body = [
            [r["task"], METHOD_TITLES.get(r["method"], r["method"]), str(r["gallery"])]
            + [_fmt(r.get(k), 1) for k in keys]
            for r in rec
        ]
        parts += [markdown_table(["task", "poses from", "gallery", *titles], body), ""]

    for task, tr in result.tasks.items():
        mr = tr.methods.get(MODEL)
        if mr is None:
            continue
        for kind, groups, label in (
            ("source", mr.by_source, "source"),
            ("type", mr.by_type, "description type"),
        ):
            if len(groups) < 1 or (kind == "source" and len(groups) < 2 and task != "image2pose"):
                continue
            parts += [f"## {task}: model by {label}", ""]
            body = [
                [g, str(int(v.get("count", 0)))] + [_fmt(v.get(m), decimals) for m in cols]
                for g, v in groups.items()
            ]
            parts += [markdown_table([label, "samples", *units], body), ""]

    extra = {task: tr.extra for task, tr in result.tasks.items() if tr.extra}
    if extra:
        parts += [
            "## Pose inputs",
            "",
            "The model is given poses. poseedit: PA-MPJPE of the edited pose to the target over that of *no edit* "
            "(answer pose A) and of the caption nearest neighbour (issue 17's target: ≤ 0.7). pose2text and "
            "posediff: BLEU-1/4 and ROUGE-L (×100) of the answer against the reference text; pose2text's R^P2T "
            "is in the retrieval table (generated captions against the input poses; the ground-truth row is the "
            "reference captions' ceiling); posediff's pair recall ranks the N test pairs by the cosine similarity "
            "of the answer's text embedding to each pair's reference modifier (chance K / N).",
            "",
        ]
        body = [
            [task, name, _fmt(value, decimals)]
            for task, values in extra.items()
            for name, value in values.items()
        ]
        parts += [markdown_table(["task", "metric", "value"], body), ""]

    notes = [(task, n) for task, tr in result.tasks.items() for n in tr.notes]
    if notes or result.skipped:
        parts += ["## Notes", ""]
        parts += [f"- {task}: {n}" for task, n in notes]
        parts += [f"- {task}: not evaluated ({why})" for task, why in result.skipped.items()]
        parts.append("")

    if examples:
        parts += [
            "## Examples (best, median, worst by the model's PA-MPJPE; tasks answered in words: first, middle, last rows)",
            "",
        ]
        for task, cases in examples.items():
            parts.append(f"### {task}")
            parts.append("")
            for case, path in cases.items():
                parts.append(f"**{case}**  ")
                parts.append(f"![{task} {case}]({path.relative_to(report_dir).as_posix()})")
                parts.append("")
    return "\n".join(parts) + "\n"
