"""Share of a training step spent waiting for its batch: rows encoded on the worker vs on Ray Data's actors.

Runs the tiny preset twice on the same shards, 2 workers x ``--batch`` rows (default:
the preset's), for ``--skip`` warm-up steps plus ``--steps`` measured ones: once with
``data.encode_on=worker`` (the training step decodes images and tokenises, as
before issue #14 part 3) and once with ``data.encode_on=ray_data`` (CPU actors do
it in a ``map_batches`` stage; the step only pads and stacks). Prints, over the
measured steps, the data-wait share (total ``perf/data_wait_s`` over total
``train/step_time_s``, both as the workers log them to MLflow), the mean wait per
step, and median samples/s.

    python benchmarks/train_data_wait.py --shards outputs/demo/shards

On a CPU-only machine the actors and the training workers share the same cores,
so the figure says how much of the step the worker itself spent on the data; on
a GPU node the actors run on CPUs the GPU step does not use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.train_throughput import TINY, fit_once  # noqa: E402
from posegpt.runtime import setup_environment  # noqa: E402


def measured(history: list[tuple[int, float]], skip: int) -> list[float]:
    return [v for step, v in history if step > skip]


def run(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    total = args.skip + args.steps
    common = [
        f"data.shard_root={args.shards}",
        f"storage_path={work / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"schedule.max_steps={total}",
        f"checkpoint.every={total}",
        "validation.every=0",
        "logging.every=1",
        "logging.register_model=false",
        "scaling.num_workers=2",
        "scaling.resources_per_worker={CPU: 0.5}",
        *args.override,
    ]
    if args.batch:
        common.append(f"data.batch_size_per_worker={args.batch}")
    if args.base_model:
        common += [f"model.base_model={args.base_model}", "model.build_tiny_if_missing=false"]
    out = {}
    for where in args.modes:
        print(f"-- data.encode_on={where}: {args.skip} warm-up + {args.steps} measured steps", flush=True)
        r = fit_once(
            TINY,
            [
                *common,
                f"run_name=wait-{where}",
                f"data.encode_on={where}",
                f"logging.status_dir={work / f'status-{where}'}",
            ],
        )
        h = r["history"]
        wait = measured(h["perf/data_wait_s"], args.skip)
        step = measured(h["train/step_time_s"], args.skip)
        out[where] = {
            "share": sum(wait) / sum(step),
            "wait_ms": 1000 * statistics.mean(wait),
            "p90_wait_ms": 1000 * statistics.quantiles(wait, n=10)[-1],
            "step_ms": 1000 * statistics.mean(step),
            "samples_per_s": statistics.median(measured(h["train/samples_per_s"], args.skip)),
            "fit_s": r["fit_s"],
            "first_step_s": r["first_step_s"],
        }
    ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", required=True, help="shard folder written by jobs/prepare.py")
    parser.add_argument("--base-model", help="tiny LLaVA folder (default: the preset's, built if missing)")
    parser.add_argument("--steps", type=int, default=60, help="measured steps per run")
    parser.add_argument("--skip", type=int, default=10, help="warm-up steps before them")
    parser.add_argument("--batch", type=int, help="samples per worker per step (default: the preset's)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--modes", nargs="+", default=["worker", "ray_data"], choices=["worker", "ray_data"])
    parser.add_argument("--override", action="append", default=[], help="extra key=value for both runs")
    args = parser.parse_args(argv)
    setup_environment()
    with tempfile.TemporaryDirectory(prefix="data-wait-bench-") as tmp:
        results = run(args, Path(tmp))
    print()
    print(
        f"tiny preset, 2 workers x {args.batch or 'the preset'} rows, {args.cpus}-CPU Ray, "
        f"{args.steps} steps after {args.skip} warm-up steps"
    )
    print(
        f"{'encode_on':10s} {'wait share':>10s} {'wait/step':>10s} {'p90 wait':>9s} {'step':>8s} {'samples/s':>10s}"
        f" {'fit->1st step':>14s}"
    )
    for where, r in results.items():
        print(
            f"{where:10s} {r['share']:10.1%} {r['wait_ms']:8.1f}ms {r['p90_wait_ms']:7.1f}ms "
            f"{r['step_ms']:6.0f}ms {r['samples_per_s']:10.1f} {r['first_step_s']:13.1f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
