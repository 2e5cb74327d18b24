"""Compare MLflow runs: one table sorted by a metric, printed and written as CSV.

    python jobs/compare.py --config configs/compare/default.yaml
    python jobs/compare.py --experiment posegpt --metric r_t2p_10 tracking.tracking_uri=http://mlflow:5000

Rows are runs (training runs, with their latest evaluation folded in as ``eval.*``
columns); columns are the params that differ between them, their final metrics
and the evaluation metrics.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("overrides", nargs="*", help="key=value settings")
    args = parser.parse_args(argv)
    setup_environment(DEFAULT_CACHE_DIR)

    from posegpt.config import ConfigError, load_config
    from posegpt.evaluation.compare import CompareConfig, compare_runs

    overrides = list(args.overrides)
    if args.experiment:
        overrides.append(f"tracking.experiment={args.experiment}")
    if args.metric:
        overrides.append(f"metric={args.metric}")
    if args.csv:
        overrides.append(f"csv_path={args.csv}")
    try:
        cfg = load_config(CompareConfig, args.config, overrides)
        table = compare_runs(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    csv_path = Path(cfg.csv_path) if cfg.csv_path else Path(cfg.output_dir) / "compare" / "runs.csv"
    table.write_csv(csv_path)
    order = "descending" if table.descending else "ascending"
    sorted_by = (
        f"sorted by {table.sort_column} ({order})"
        if table.sort_column
        else f"metric {cfg.metric!r} not found, unsorted"
    )
    print(f"{len(table.rows)} runs of experiment {table.experiment!r} in {table.tracking_uri}, {sorted_by}")
    print(table.render())
    print(f"CSV: {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
