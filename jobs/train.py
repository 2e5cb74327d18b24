"""Fine-tune PoseGPT on QA shards with Ray Train, DeepSpeed and LoRA; log to MLflow.

    python jobs/train.py --config configs/train/tiny.yaml
    python jobs/train.py --config configs/train/tiny.yaml schedule.max_steps=50 run_name=quick
    ray job submit --working-dir . -- python jobs/train.py --config configs/train/llava-1.5-7b.yaml \\
        data.shard_root=s3://bucket/shards storage_path=s3://bucket/runs tracking.tracking_uri=http://mlflow:5000

Further ``key=value`` arguments override the preset. Rerunning the same ``run_name``
(with the same ``storage_path``) resumes from its latest checkpoint; raise
``schedule.max_steps`` to train further. Exit status: 0 done, 1 the run failed or
stopped (bad data, NaN loss), 2 a bad config.
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

from posegpt.runtime import setup_environment  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML preset (configs/train/<name>.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. schedule.max_steps=100")
    args = parser.parse_args(argv)
    setup_environment()

    from posegpt.config import ConfigError, load_config
    from posegpt.tracking import apply_environment
    from posegpt.training.config import TrainConfig

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        apply_environment(cfg, os.environ)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2

    from posegpt.training.guard import TrainingStopped
    from posegpt.training.shards import ShardError
    from posegpt.training.trainer import PreflightError, train

    try:
        outcome = train(cfg)
    except (PreflightError, ShardError, TrainingStopped, FileNotFoundError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 1
    metrics = outcome.result.metrics or {}
    print(f"run folder: {outcome.run_dir}")
    print(f"latest checkpoint: {outcome.checkpoint_uri}")
    for key in sorted(metrics):
        if key == "step" or (key.startswith("val/") and key.endswith(("pa_mpjpe", "pa_mpjpe_vs_mean_pose"))):
            print(f"{key}: {metrics[key]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
