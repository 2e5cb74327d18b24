"""Run comparison: one table of MLflow runs, sorted by a metric, printed and written as CSV.

A row is a run of the experiment (a training run, typically). Its columns are
the params whose values differ between the rows (the ones that explain a
difference), its final metrics (MLflow keeps the latest value of each), and the
metrics of its latest evaluation, prefixed ``eval.``: evaluation runs are
children of the run they evaluate (``mlflow.parentRunId``, or the
``posegpt.train_run_id`` tag where the parent lives in another store), so they
fold into their parent's row instead of taking rows of their own. An evaluation
run whose parent is not in the experiment keeps its own row (its metrics under
``eval.`` too).
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


@dataclass
class RunTable:
    """The comparison: column names, one dict per row, and what it is sorted by."""

    columns: list[str]
    rows: list[dict[str, Any]]
    sort_column: str | None
    descending: bool
    experiment: str
    tracking_uri: str

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
    return RunTable(columns, rows, sort_column, descending, cfg.tracking.experiment, uri)


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
    if metric in columns:
        return metric
    for col in columns:
        if col.endswith(("/" + metric, "." + metric, "_" + metric)) or col.split("/")[-1] == metric:
            return col
    return None


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
