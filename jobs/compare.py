"""Compare MLflow runs: a compact table sorted by a metric, a CSV of every column, an HTML page.

    python jobs/compare.py --config configs/compare/default.yaml
    python jobs/compare.py --experiment posegpt --metric r_t2p_10 tracking.tracking_uri=http://mlflow:5000
    python jobs/compare.py --config configs/compare/default.yaml --all     # every column

Rows are runs (training runs, with their latest evaluation folded in as ``eval.*``
columns). The printed table shows the params that differ and the headline numbers
(PA-MPJPE and its ratio to the mean pose per task, R^T2P@10, pose-answer rate,
samples/s) within ``max_width`` characters; ``--all`` prints every param and metric.
The CSV holds every column; the HTML page the headline table and the validation
curves overlaid. Both are logged to a ``compare`` run, and the MLflow compare view's
address is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML preset (configs/compare/default.yaml)")
    parser.add_argument("--experiment", help="MLflow experiment (overrides tracking.experiment)")
    parser.add_argument(
        "--metric", help="column to sort by (overrides metric), e.g. pa_mpjpe or eval.text2pose/r_t2p_10"
    )
    parser.add_argument("--csv", help="where to write the CSV (overrides csv_path)")
    parser.add_argument(
        "--all", action="store_true", help="print every column (params and metrics), however wide"
    )
    parser.add_argument("overrides", nargs="*", help="key=value settings")
    args = parser.parse_args(argv)
    setup_environment(DEFAULT_CACHE_DIR)

    from posegpt.config import ConfigError, load_config
    from posegpt.evaluation import compare
    from posegpt.evaluation.compare import CompareConfig, compare_runs
    from posegpt.tracking import apply_environment

    overrides = list(args.overrides)
    if args.experiment:
        overrides.append(f"tracking.experiment={args.experiment}")
    if args.metric:
        overrides.append(f"metric={args.metric}")
    if args.csv:
        overrides.append(f"csv_path={args.csv}")
    try:
        cfg = load_config(CompareConfig, args.config, overrides)
        apply_environment(cfg, os.environ)
        table = compare_runs(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    folder = Path(cfg.output_dir) / "compare"
    csv_path = table.write_csv(Path(cfg.csv_path) if cfg.csv_path else folder / "runs.csv")
    base = compare.ui_base(cfg, table.tracking_uri)
    view = compare.compare_view_url(table, base)
    html_path = Path(cfg.html_path) if cfg.html_path else folder / "comparison.html"
    curves = compare.curves_png(
        compare.validation_curves(table), html_path.with_name("validation_curves.png")
    )
    compare.write_html(table, html_path, curves, view)
    order = "descending" if table.descending else "ascending"
    sorted_by = (
        f"sorted by {table.sort_column} ({order})"
        if table.sort_column
        else f"metric {cfg.metric!r} not found, unsorted"
    )
    print(f"{len(table.rows)} runs of experiment {table.experiment!r} in {table.tracking_uri}, {sorted_by}")
    print(table.render() if args.all else table.render_compact(cfg.max_width))
    print(f"CSV: {csv_path}")
    print(f"HTML: {html_path}")
    if cfg.log_artifacts:
        run_id = compare.log_comparison(table, [p for p in (csv_path, html_path, curves) if p is not None])
        print(f"logged to MLflow run {run_id} (artifacts comparison/)")
    if table.tracking_uri.startswith("sqlite:///") and not cfg.ui_url:
        print(f"MLflow compare view (after `mlflow ui --backend-store-uri {table.tracking_uri}`): {view}")
    else:
        print(f"MLflow compare view: {view}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
