"""Run comparison: one table of MLflow runs, sorted by a metric, printed, and written as CSV and HTML.

A row is a run of the experiment (a training run, typically). Its columns are
the params whose values differ between the rows (the ones that explain a
difference), its final metrics (MLflow keeps the latest value of each), and the
metrics of its latest evaluation, prefixed ``eval.``: evaluation runs are
children of the run they evaluate (``mlflow.parentRunId``, or the
``posegpt.train_run_id`` tag where the parent lives in another store), so they
fold into their parent's row instead of taking rows of their own. An evaluation
run whose parent is not in the experiment keeps its own row (its metrics under
``eval.`` too).

People read the compact view (``RunTable.render_compact``): run, job, the params that
differ, and the headline numbers (PA-MPJPE and its ratio to the mean pose per task,
R^T2P@10, the rate of answers that hold a pose, samples/s), cut to a terminal's width.
``write_html`` puts the same headline table and the runs' validation curves, overlaid,
in one page; the job logs it to a ``compare`` run and prints the MLflow compare view.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posegpt.evaluation.tracking_links import EVAL_JOB, JOB_TAG, PARENT_TAG, TRAIN_RUN_TAG
from posegpt.tracking import TrackingConfig, resolve_tracking_uri

EVAL_PREFIX = "eval."
COMPARE_JOB = "compare"
"""``posegpt.job`` of the run that holds a comparison's artifacts (never a row of a comparison)."""
POSE_TASKS = {"text2pose": "t2p", "image2pose": "i2p", "spg": "spg", "rpe": "rpe"}
"""Tasks whose answers carry poses, with the short names of the compact table."""
HEADLINE_RANK = {
    label: rank
    for rank, label in enumerate(
        (
            "t2p PA (xmean)",
            "i2p PA (xmean)",
            "R@10 t2p",
            "pose %",
            "samp/s",
            "rpe PA (xmean)",
            "spg PA (xmean)",
        )
    )
}
"""Which headline numbers the compact table keeps longest when it must drop some to fit."""
HIGHER_IS_BETTER = ("r_t2p", "r_p2t", "r_mean", "recall", "accuracy")
"""Metric names containing one of these sort best-first descending; every other metric (errors, losses) ascending."""


@dataclass
class CompareConfig:
    """Which runs to compare, how to sort them and where the CSV goes."""

    output_dir: str = "outputs/demo"
    """Folder whose ``mlflow.db`` is the tracking store when ``tracking.tracking_uri`` is empty; the CSV goes under it too."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Tracking store and experiment to read (``tracking.experiment``)."""
    metric: str = "pa_mpjpe"
    """Column to sort by: an exact column name (``eval.text2pose/pa_mpjpe``) or a name that columns end with (``pa_mpjpe``: the first such evaluation column, else run metric)."""
    descending: bool | None = None
    """Sort order; empty: descending for recalls, ascending for errors and losses."""
    jobs: list[str] = field(default_factory=list)
    """Keep only runs whose ``posegpt.job`` tag is one of these (e.g. ``[train]``); empty: every run that is not an evaluation folded into its parent."""
    always_params: list[str] = field(default_factory=list)
    """Params shown even when every run has the same value."""
    ignore_params: list[str] = field(default_factory=list)
    """Params never shown (e.g. output paths that differ by construction)."""
    max_runs: int = 500
    """Newest runs read from the store."""
    csv_path: str | None = None
    """Where the table is written; empty: ``<output_dir>/compare/runs.csv``."""
    html_path: str | None = None
    """Where the page with the headline table and the overlaid validation curves goes; empty: ``<output_dir>/compare/comparison.html``."""
    max_width: int = 120
    """Widest line of the printed compact table; param columns that do not fit are left to ``--all`` and the CSV."""
    log_artifacts: bool = True
    """Log the CSV and the page to a run of the experiment tagged ``posegpt.job=compare``."""
    ui_url: str | None = None
    """MLflow UI address for the printed link to the compare view; empty: the tracking server's, or http://127.0.0.1:5000 (``mlflow ui``) for a sqlite store."""


@dataclass
class RunTable:
    """The comparison: column names, one dict per row, and what it is sorted by."""

    columns: list[str]
    rows: list[dict[str, Any]]
    sort_column: str | None
    descending: bool
    experiment: str
    tracking_uri: str
    experiment_id: str = ""

    def write_csv(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({c: _csv_value(row.get(c)) for c in self.columns})
        return out

    def render(self, max_width: int = 40) -> str:
        """A fixed-width text table for the terminal."""
        cells = [[_short(_display(row.get(c)), max_width) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)

    def headline_columns(self) -> list[tuple[str, list[str]]]:
        """The headline numbers as ``(label, one text per row)``, only those some run has."""
        out: list[tuple[str, list[str]]] = []
        for task, short in POSE_TASKS.items():
            texts = [_pa_text(row, task) for row in self.rows]
            if any(texts):
                out.append((f"{short} PA (xmean)", texts))
        for label, pick in (
            ("R@10 t2p", lambda row: _num(row.get(f"{EVAL_PREFIX}text2pose/r_t2p_10"), "{:.1f}")),
            ("pose %", _pose_rate_text),
            (
                "samp/s",
                lambda row: _num(
                    row.get(f"{EVAL_PREFIX}samples_per_second", row.get("train/samples_per_s")), "{:.1f}"
                ),
            ),
        ):
            texts = [pick(row) for row in self.rows]
            if any(texts):
                out.append((label, texts))
        return out

    def compact_columns(self, max_width: int) -> tuple[list[tuple[str, list[str]]], int]:
        """The columns of the compact table that fit ``max_width`` and how many param columns were left out."""
        fixed = [
            ("run", [_short(str(r.get("run_name") or r["run_id"][:8]), 20) for r in self.rows]),
            ("job", [_short(str(r.get("job", "")), 8) for r in self.rows]),
        ]
        headline = self.headline_columns()
        params = [
            (label, [_short(_display(r.get(col)), 12) for r in self.rows])
            for col, label in _param_labels([c for c in self.columns if c.startswith("param.")]).items()
        ]
        # Narrow params first: more of them fit, and long values (paths) are cut anyway.
        params.sort(key=lambda column: max(len(v) for v in [column[0], *column[1]]))
        # What gives way first when the terminal is narrow: params past the first two, then the
        # headline numbers by rank (HEADLINE_RANK), then the last params, then all but one number.
        shown = list(params)
        kept = sorted(headline, key=lambda column: HEADLINE_RANK.get(column[0], len(HEADLINE_RANK)))

        def too_wide() -> bool:
            return _table_width(fixed + shown + kept) > max_width

        for keep_params, keep_numbers in ((2, 3), (0, 3), (0, 1)):
            while too_wide() and len(shown) > keep_params:
                shown.pop()
            while too_wide() and len(kept) > keep_numbers:
                kept.pop()
        numbers = [column for column in headline if column in kept]
        return fixed + shown + numbers, len(params) - len(shown)

    def render_compact(self, max_width: int = 120) -> str:
        """Run, job, differing params and headline metrics, no wider than ``max_width`` (when it can be)."""
        columns, hidden = self.compact_columns(max_width)
        text = _render_columns(columns)
        if hidden:
            text += (
                f"\n({hidden} more differing params not shown: --all prints every column, the CSV has them)"
            )
        return text


def compare_runs(cfg: CompareConfig) -> RunTable:
    """Read the experiment's runs and build the sorted table (errors name the store and experiment)."""
    from mlflow.tracking import MlflowClient

    uri = _existing_store(cfg)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(
            f"experiment {cfg.tracking.experiment!r} not found in {uri}; experiments there: {names}"
        )
    runs = list(
        client.search_runs(
            [experiment.experiment_id], max_results=cfg.max_runs, order_by=["attributes.start_time DESC"]
        )
    )
    if not runs:
        raise ValueError(f"experiment {cfg.tracking.experiment!r} in {uri} has no runs")
    by_id = {r.info.run_id: r for r in runs}

    # Newest evaluation first, so the first one seen per parent is its latest.
    evals_of: dict[str, Any] = {}
    rows_runs = []
    for r in runs:
        if r.data.tags.get(JOB_TAG) == COMPARE_JOB:
            continue
        parent = _eval_parent(r)
        if parent is not None and parent in by_id:
            evals_of.setdefault(parent, r)
            continue
        if cfg.jobs and r.data.tags.get(JOB_TAG) not in cfg.jobs:
            continue
        rows_runs.append(r)
    if not rows_runs:
        raise ValueError(f"no runs of jobs {cfg.jobs} in experiment {cfg.tracking.experiment!r} ({uri})")

    rows: list[dict[str, Any]] = []
    for r in rows_runs:
        row: dict[str, Any] = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name or r.data.tags.get("mlflow.runName", ""),
            "job": r.data.tags.get(JOB_TAG, ""),
            "status": r.info.status,
        }
        row.update({f"param.{k}": v for k, v in r.data.params.items()})
        # An evaluation with a row of its own: its metrics are evaluation metrics all the same.
        own = EVAL_PREFIX if r.data.tags.get(JOB_TAG) == EVAL_JOB else ""
        row.update({f"{own}{k}": v for k, v in r.data.metrics.items()})
        ev = evals_of.get(r.info.run_id)
        if ev is not None:
            row["eval_run_id"] = ev.info.run_id
            row.update({f"{EVAL_PREFIX}{k}": v for k, v in ev.data.metrics.items()})
        rows.append(row)

    params = _shown_params(rows, cfg)
    metric_cols = sorted(
        {k for row in rows for k in row if _is_metric_key(k) and not k.startswith(EVAL_PREFIX)}
    )
    eval_cols = sorted({k for row in rows for k in row if k.startswith(EVAL_PREFIX)})
    base = ["run_id", "run_name", "job", "status"]
    columns = base + params + metric_cols + eval_cols + (["eval_run_id"] if eval_cols else [])

    # Evaluation metrics first: "pa_mpjpe" means the test-set number when there is one.
    sort_column = _find_column(cfg.metric, eval_cols + metric_cols)
    descending = (
        cfg.descending if cfg.descending is not None else _higher_is_better(sort_column or cfg.metric)
    )
    if sort_column is not None:
        present = [r for r in rows if _is_number(r.get(sort_column))]
        missing = [r for r in rows if not _is_number(r.get(sort_column))]
        present.sort(key=lambda r: float(r[sort_column]), reverse=descending)
        rows = present + missing  # runs without the metric go last, whatever the order
    return RunTable(
        columns, rows, sort_column, descending, cfg.tracking.experiment, uri, experiment.experiment_id
    )


def _existing_store(cfg: CompareConfig) -> str:
    """The tracking URI; a sqlite store must already exist (reading must not create an empty one)."""
    if cfg.tracking.tracking_uri:
        uri = cfg.tracking.tracking_uri
    else:
        uri = resolve_tracking_uri(cfg.tracking, cfg.output_dir)
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if not path.exists():
            raise FileNotFoundError(
                f"no MLflow tracking store at {path}: run a job first, or set tracking.tracking_uri "
                "(or output_dir) to the store the jobs wrote"
            )
    return uri


def _eval_parent(run: Any) -> str | None:
    tags = run.data.tags
    if tags.get(JOB_TAG) != EVAL_JOB:
        return None
    return tags.get(PARENT_TAG) or tags.get(TRAIN_RUN_TAG)


def _shown_params(rows: list[dict[str, Any]], cfg: CompareConfig) -> list[str]:
    keys = sorted({k for row in rows for k in row if k.startswith("param.")})
    ignore = {f"param.{p}" for p in cfg.ignore_params}
    always = {f"param.{p}" for p in cfg.always_params}
    shown = []
    for k in keys:
        if k in ignore:
            continue
        # Rows without the param (evaluation runs log the eval config, not the training one) do not count.
        values = {str(row[k]) for row in rows if k in row}
        if len(values) > 1 or k in always:
            shown.append(k)
    return shown


def _is_metric_key(key: str) -> bool:
    return key not in ("run_id", "run_name", "job", "status", "eval_run_id") and not key.startswith("param.")


def _find_column(metric: str, columns: list[str]) -> str | None:
    """``metric`` itself, else the column ending with it; the model's own number (fewest ``/``) first."""
    if metric in columns:
        return metric
    found = [
        col
        for col in columns
        if col.endswith(("/" + metric, "." + metric, "_" + metric)) or col.split("/")[-1] == metric
    ]
    # "pa_mpjpe" must pick eval.<task>/pa_mpjpe, not a baseline's eval.<task>/mean_pose/pa_mpjpe.
    return min(found, key=lambda col: col.count("/")) if found else None


def _higher_is_better(name: str) -> bool:
    leaf = name.rsplit("/", 1)[-1]
    return any(tok in leaf for tok in HIGHER_IS_BETTER)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _display(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _csv_value(v: Any) -> Any:
    return "" if v is None else v


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(value: Any, fmt: str) -> str:
    return fmt.format(float(value)) if _is_number(value) else ""


def _pa_text(row: dict[str, Any], task: str) -> str:
    """``PA-MPJPE (ratio to the mean pose)`` of a task: the evaluation's, else the last validation's."""
    pa = row.get(f"{EVAL_PREFIX}{task}/pa_mpjpe")
    mean = row.get(f"{EVAL_PREFIX}{task}/mean_pose/pa_mpjpe")
    ratio = float(pa) / float(mean) if _is_number(pa) and _is_number(mean) and float(mean) > 0 else None
    if not _is_number(pa):
        pa, ratio = row.get(f"val/{task}/pa_mpjpe"), row.get(f"val/{task}/pa_mpjpe_vs_mean_pose")
    if not _is_number(pa):
        return ""
    return f"{float(pa):.1f}" + (f" ({float(ratio):.2f})" if _is_number(ratio) else "")


def _pose_rate_text(row: dict[str, Any]) -> str:
    """Percent of the evaluation's answers on pose tasks that held a pose (mean over those tasks)."""
    rates = [row.get(f"{EVAL_PREFIX}{task}/missing_pose_rate") for task in POSE_TASKS]
    present = [1.0 - float(r) for r in rates if _is_number(r)]
    return f"{100.0 * sum(present) / len(present):.0f}" if present else ""


def _param_labels(columns: list[str]) -> dict[str, str]:
    """Short labels for param columns: the last dotted part, longer where two would collide."""
    labels: dict[str, str] = {}
    for col in columns:
        parts = col[len("param.") :].split(".")
        depth = 1
        while depth < len(parts):
            label = ".".join(parts[-depth:])
            if sum(".".join(c[len("param.") :].split(".")[-depth:]) == label for c in columns) == 1:
                break
            depth += 1
        labels[col] = _short(".".join(parts[-depth:]), 16)
    return labels


def _table_width(columns: list[tuple[str, list[str]]]) -> int:
    widths = [max([len(label)] + [len(v) for v in values]) for label, values in columns]
    return sum(widths) + 2 * (len(widths) - 1)


def _render_columns(columns: list[tuple[str, list[str]]]) -> str:
    widths = [max([len(label)] + [len(v) for v in values]) for label, values in columns]
    rows = list(zip(*[values for _, values in columns], strict=True)) if columns else []
    lines = ["  ".join(label.ljust(w) for (label, _), w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


CURVE_SUFFIXES = ("/pa_mpjpe", "/pa_mpjpe_vs_mean_pose")
"""Validation metrics (``val/<task><suffix>``) drawn, one panel each, with every run's curve overlaid."""


def validation_curves(table: RunTable) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """``{metric: {run label: (steps, values)}}`` of the rows' ``val/*`` histories (latest value per step)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=table.tracking_uri)
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for row in table.rows:
        label = f"{row.get('run_name') or row['run_id'][:8]} ({row['run_id'][:6]})"
        for key in sorted(k for k in row if k.startswith("val/") and k.endswith(CURVE_SUFFIXES)):
            by_step: dict[int, tuple[int, float]] = {}
            for m in client.get_metric_history(row["run_id"], key):
                if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                    by_step[m.step] = (m.timestamp, m.value)
            steps = sorted(by_step)
            out.setdefault(key, {})[label] = (steps, [by_step[s][1] for s in steps])
    return out


def curves_png(curves: dict[str, dict[str, tuple[list[int], list[float]]]], path: Path) -> Path | None:
    """One panel per validation metric, a line per run; None when no run has a validation curve."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 1, figsize=(8, 3.2 * len(curves)), squeeze=False)
    for ax, (key, runs) in zip(axes[:, 0], sorted(curves.items()), strict=True):
        for label, (steps, values) in runs.items():
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        if key.endswith("_vs_mean_pose"):
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="mean pose")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_html(table: RunTable, path: str | Path, curves_file: Path | None, view_url: str) -> Path:
    """The headline table of every run (every differing param too) and the overlaid validation curves."""
    import base64
    import html

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns, _ = table.compact_columns(max_width=10**6)
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(values[i])}</td>" for _, values in columns) + "</tr>"
        for i in range(len(table.rows))
    )
    image = ""
    if curves_file is not None and curves_file.is_file():
        data = base64.b64encode(curves_file.read_bytes()).decode()
        image = f'<h2>Validation curves</h2><img alt="validation curves" src="data:image/png;base64,{data}">'
    order = "descending" if table.descending else "ascending"
    sorted_by = f"sorted by {html.escape(table.sort_column)} ({order})" if table.sort_column else "unsorted"
    out.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>PoseGPT run comparison</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}</style></head><body>"
        f"<h1>Runs of experiment {html.escape(table.experiment)}</h1>"
        f"<p>{len(table.rows)} runs in {html.escape(table.tracking_uri)}, {sorted_by}. "
        "PA-MPJPE in mm, in brackets its ratio to the mean pose's (below 1: better than the mean pose); "
        "R@10: R^T2P@10 in percent; pose %: answers to pose queries that hold a pose. "
        f'<a href="{html.escape(view_url)}">MLflow compare view</a></p>'
        f"<table><tr>{head}</tr>{body}</table>{image}</body></html>\n"
    )
    return out


def ui_base(cfg: CompareConfig, tracking_uri: str) -> str:
    """The MLflow UI that shows ``tracking_uri``: configured, the server itself, or a local ``mlflow ui``."""
    if cfg.ui_url:
        return cfg.ui_url.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def compare_view_url(table: RunTable, base: str) -> str:
    """MLflow's compare-runs page for the table's runs (the UI's route: ``#/compare-runs?runs=[..]&experiments=[..]``)."""
    import json
    from urllib.parse import quote

    runs = json.dumps([r["run_id"] for r in table.rows], separators=(",", ":"))
    experiments = json.dumps([table.experiment_id], separators=(",", ":"))
    return f"{base}/#/compare-runs?runs={quote(runs)}&experiments={quote(experiments)}"


def log_comparison(table: RunTable, files: list[Path]) -> str:
    """Log the comparison's files to a new ``compare`` run of the experiment; returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=table.tracking_uri)
    run = client.create_run(table.experiment_id, run_name="compare", tags={JOB_TAG: COMPARE_JOB})
    try:
        for f in files:
            client.log_artifact(run.info.run_id, str(f), artifact_path="comparison")
        client.log_param(run.info.run_id, "compared_runs", ",".join(r["run_id"] for r in table.rows)[:6000])
    except Exception:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id)
    return run.info.run_id
