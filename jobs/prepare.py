"""Turn raw datasets into the Parquet QA shards of DESIGN.md (Ray Data), with a manifest, rejects and an MLflow run.

The driver plans (one part per npz row range, tar shard or share of a JSON-indexed source);
Ray Data workers read, transform and write the shards; the manifest is written last.

    python jobs/prepare.py --config configs/prepare/synthetic.yaml raw_root=outputs/world out=outputs/shards
    ray job submit --working-dir . -- python jobs/prepare.py --config configs/prepare/real.yaml \\
        raw_root=s3://datasets/raw out=s3://datasets/shards/v1 storage.endpoint_url=http://minio:9000 \\
        tracking.tracking_uri=http://mlflow:5000

Further ``key=value`` arguments override the config (``sources.llava.enabled=false``,
``rows_per_file=500``, ``engine=local``). Prints one summary line (read / accepted /
rejected per source). Exit codes: 0 done; 1 an input path does not exist, the
output already exists, or rejects exceed ``max_reject_fraction`` (the shards are
still written then); 2 a bad config.
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


def tracking_dir(out: str) -> str:
    """Where the default sqlite MLflow store goes: next to a local output folder."""
    from posegpt.storage import is_s3

    return out if is_s3(out) else str(Path(out).expanduser().resolve().parent)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML preset (configs/prepare/<name>.yaml)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache folder for tools")
    parser.add_argument(
        "overrides", nargs="*", help="key=value settings, e.g. raw_root=outputs/world out=outputs/shards"
    )
    args = parser.parse_args(argv)
    setup_environment(args.cache_dir)

    from pipelines.prepare import PrepareError, prepare
    from pipelines.prepare_config import PrepareConfig
    from pipelines.writer import OutputExistsError
    from posegpt import tracking
    from posegpt.config import ConfigError, load_config

    try:
        cfg = load_config(PrepareConfig, args.config, args.overrides)
        tracking.apply_environment(cfg, os.environ)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 2
    try:
        with tracking.run(
            cfg.tracking, tracking_dir(cfg.out), run_name="prepare", tags={tracking.JOB_TAG: "prepare"}
        ) as active:
            if active is not None:
                tracking.log_config(cfg)
            result = prepare(cfg)
            print(result.summary_line(), flush=True)
            if active is not None:
                log_result(result)
    except (PrepareError, OutputExistsError, ValueError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    print(f"prepare: wrote {result.accepted} rows to {cfg.out} (manifest.json, rejects: {result.rejected})")
    if result.reject_fraction > cfg.max_reject_fraction:
        print(
            f"prepare: {result.rejected} of {result.read} records rejected ({result.reject_fraction:.1%}), more than "
            f"max_reject_fraction={cfg.max_reject_fraction:.1%}; reasons in {result.rejects_uri}",
            file=sys.stderr,
        )
        return 1
    return 0


def log_result(result: object) -> None:
    """Counts as metrics, manifest and rejects as artifacts, the shard folder as the run's dataset."""
    import tempfile

    import mlflow

    from pipelines.prepare import PrepareResult
    from posegpt import tracking
    from posegpt.storage import is_s3

    assert isinstance(result, PrepareResult)
    metrics: dict[str, float] = {
        "read": result.read,
        "accepted": result.accepted,
        "rejected": result.rejected,
        "reject_fraction": result.reject_fraction,
        "seconds": result.seconds,
    }
    for name, stats in result.per_input.items():
        for key, value in stats.items():
            metrics[f"{name}.{key}"] = value
    for task, splits in result.manifest["counts"].items():
        for split, value in splits.items():
            metrics[f"rows.{task}.{split}"] = value
    mlflow.log_metrics(metrics)
    mlflow.log_dict(result.manifest, "manifest.json")
    if not is_s3(result.rejects_uri) and Path(result.rejects_uri).is_dir():
        mlflow.log_artifacts(result.rejects_uri, "rejects")
    elif is_s3(result.rejects_uri) and result.rejected:
        from posegpt.storage import download_dir

        with tempfile.TemporaryDirectory(prefix="rejects-") as tmp:
            mlflow.log_artifacts(str(download_dir(result.rejects_uri, tmp)), "rejects")
    tracking.log_shard_dataset(result.out, result.manifest, "preparing")


if __name__ == "__main__":
    raise SystemExit(main())
