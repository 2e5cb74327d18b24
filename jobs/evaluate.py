"""Evaluate a PoseGPT checkpoint on test shards, against baselines, with Ray; report and log to MLflow.

    python jobs/evaluate.py --config configs/eval/tiny.yaml checkpoint=outputs/train/posegpt/checkpoint
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/eval/paper.yaml \\
        checkpoint=models:/posegpt/3 tracking.tracking_uri=http://mlflow:5000

Further ``key=value`` arguments override the config (``data.max_samples=200``,
``inference.concurrency=4``). The report lands in ``<output_dir>/report`` (Markdown,
CSV tables, rendered examples) and in the MLflow run, a child of the checkpoint's
training run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402

if TYPE_CHECKING:
    from posegpt.evaluation.config import EvalConfig
    from posegpt.evaluation.results import EvalResult

SUMMARY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("pa_mpjpe", "PA-MPJPE", " mm"),
    ("mpjpe", "MPJPE", " mm"),
    ("mpjre_x100", "MPJRE×100", ""),
    ("pa_mpjpe_14", "PA-MPJPE (14)", " mm"),
    ("mpjpe_14", "MPJPE (14)", " mm"),
)
"""Numbers of the printed table, each shown where the task has it."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML preset (configs/eval/<name>.yaml)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value settings, e.g. checkpoint=outputs/train/run/checkpoint"
    )
    args = parser.parse_args(argv)

    from posegpt.config import ConfigError, load_config
    from posegpt.evaluation.config import EvalConfig
    from posegpt.tracking import apply_environment

    try:
        cfg = load_config(EvalConfig, args.config, args.overrides)
        apply_environment(cfg, os.environ)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    setup_environment(cfg.cache_dir or DEFAULT_CACHE_DIR)

    from posegpt.evaluation.checkpoint_check import CheckpointMismatch
    from posegpt.evaluation.runner import evaluate
    from posegpt.evaluation.shards import ShardError

    try:
        result = evaluate(cfg)
    except (CheckpointMismatch, ShardError, FileNotFoundError, ValueError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1
    print(summary(result))
    promote(cfg, result)
    return 0


def promote(cfg: EvalConfig, result: EvalResult) -> None:
    """Move the model's alias (promotion.alias) to the evaluated version when it beats the holder."""
    from mlflow.exceptions import MlflowException

    from posegpt.evaluation.tracking_links import promote_if_better
    from posegpt.tracking import resolve_tracking_uri

    if not cfg.tracking.enabled:
        return
    try:
        uri = resolve_tracking_uri(cfg.tracking, cfg.output_dir)
        decision = promote_if_better(cfg.promotion, cfg.checkpoint, result.metrics(), uri, result.run_id)
    except MlflowException as exc:
        print(f"  promotion: failed, alias left as it was: {exc}", file=sys.stderr)
        return
    print(f"  promotion: {decision.reason}")


def summary(result: EvalResult) -> str:
    """The metric table against the baselines, as printed at the end of the job."""
    from posegpt.evaluation.report import retrieval_rows
    from posegpt.evaluation.results import METHOD_TITLES

    lines = [f"evaluation of {result.checkpoint}"]
    for task, tres in result.tasks.items():
        for method, mr in tres.methods.items():
            m = mr.means()
            if not m:
                continue  # answered in words (pose2text): its numbers follow
            # Joints-only sources (H36M protocol 2) have the 14-joint pair and no rotation error.
            numbers = [
                f"{title} {m[key]:7.1f}{unit}"
                for key, title, unit in SUMMARY_METRICS
                if key in m
                and (key.endswith("_14") or "pa_mpjpe_14" not in m or key not in ("mpjpe", "pa_mpjpe"))
            ]
            lines.append(f"  {task:<10} {METHOD_TITLES.get(method, method):<28} " + "  ".join(numbers))
    for row in retrieval_rows(result):
        lines.append(
            f"  {row['task']:<10} recall, poses from {METHOD_TITLES.get(row['method'], row['method']):<28} "
            f"R^T2P@5/10/20 {row['r_t2p_5']:.1f}/{row['r_t2p_10']:.1f}/{row['r_t2p_20']:.1f}  "
            f"R^P2T@5/10/20 {row['r_p2t_5']:.1f}/{row['r_p2t_10']:.1f}/{row['r_p2t_20']:.1f}"
        )
    for task, tres in result.tasks.items():
        if tres.extra:
            numbers = ", ".join(f"{name} {value:.2f}" for name, value in tres.extra.items())
            lines.append(f"  {task:<10} {numbers}")
    lines.append(f"  {result.samples} answers at {result.samples_per_second:.2f} samples/s")
    if result.report_dir is not None:
        lines.append(f"  report: {result.report_dir / 'report.md'}")
    if result.run_id:
        lines.append(
            f"  MLflow run: {result.run_id}"
            + (f" (child of {result.train_run_id})" if result.train_run_id else "")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
