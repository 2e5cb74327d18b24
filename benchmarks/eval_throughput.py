"""Evaluation throughput (samples/s) on this machine: the Ray actor pool of jobs/evaluate.py vs one process.

    .venv/bin/python benchmarks/eval_throughput.py [--rows 48] [--batch 8] [--max-new-tokens 32]
    .venv/bin/python benchmarks/eval_throughput.py --checkpoint outputs/demo/train/posegpt/checkpoint \\
        --shards outputs/demo/shards --task text2pose --rows 200

Without ``--checkpoint`` the tiny preset's base model is built (or reused from
``.cache/models/tiny-llava``) and an untrained checkpoint made from it; without
``--shards`` small text2pose and image2pose shards are written. An untrained
model rarely emits end-of-sequence, so every answer runs to ``--max-new-tokens``:
the rate is for answers of that length. Prints, measured in this run:

* one process answering batches with ``PoseGPT.batch``, with 1 and ``--cpus`` torch threads;
* the Ray Data pipeline of the evaluation (``posegpt.evaluation.predict``) with one
  actor and with ``--cpus`` actors of one torch thread each: wall-clock samples/s
  including actor start-up and model loading, and the steady-state rate inside
  the actors;
* their ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402


def _tiny_checkpoint(out: Path) -> Path:
    import torch

    from posegpt.config import load_config
    from posegpt.model.checkpoint import save_checkpoint
    from posegpt.model.config import PoseGPTModelConfig
    from posegpt.model.posegpt_model import build_model

    cfg = load_config(
        PoseGPTModelConfig, REPO / "configs" / "model" / "tiny.yaml", ["pose_head_init=identity"]
    )
    cfg.base_model = (
        str((REPO / cfg.base_model).resolve()) if not Path(cfg.base_model).is_absolute() else cfg.base_model
    )
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), out / "checkpoint")


def _shards(out: Path, rows: int) -> Path:
    from tests.fixtures.evaluation import make_row, png_bytes, toy_pose_captions, write_rows

    poses, captions = toy_pose_captions(rows, seed=7)
    write_rows(
        out,
        "text2pose",
        "test",
        [
            make_row("text2pose", "test", i, p, caption=c, prompt=f"Show me this pose: {c}")
            for i, (p, c) in enumerate(zip(poses, captions, strict=True))
        ],
        per_file=max(1, rows // 4),
    )
    write_rows(
        out,
        "image2pose",
        "test",
        [make_row("image2pose", "test", i, p, image=png_bytes(i)) for i, p in enumerate(poses)],
        per_file=max(1, rows // 4),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="checkpoint folder (default: an untrained tiny checkpoint)")
    parser.add_argument(
        "--shards", help="shard root (default: small generated text2pose and image2pose shards)"
    )
    parser.add_argument("--task", default="text2pose", help="task whose test split is answered")
    parser.add_argument("--rows", type=int, default=48, help="rows answered per measurement")
    parser.add_argument("--batch", type=int, default=8, help="queries per generation batch")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--cpus", type=int, default=2, help="CPUs given to Ray (and torch threads of the one-process loop)"
    )
    args = parser.parse_args()
    setup_environment(DEFAULT_CACHE_DIR)

    import ray
    import torch

    from posegpt.evaluation.predict import ModelSpec, PredictJob, load_posegpt, predict
    from posegpt.evaluation.shards import read_task_rows
    from posegpt.inference import GenerationSettings, Query
    from posegpt.storage import StorageConfig

    tmp = Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    if args.checkpoint:
        checkpoint = args.checkpoint
    else:
        from posegpt.model.tiny import ensure_tiny_base

        ensure_tiny_base(REPO / ".cache" / "models" / "tiny-llava")
        checkpoint = str(_tiny_checkpoint(tmp))
    shard_root = args.shards or str(_shards(tmp / "shards", args.rows))
    rows = read_task_rows(shard_root, args.task, "test", max_rows=args.rows)
    n = len(rows)
    print(
        f"{n} {args.task} rows, batch {args.batch}, up to {args.max_new_tokens} new tokens, {args.cpus} CPUs"
    )

    def spec(threads: int) -> ModelSpec:
        return ModelSpec(
            checkpoint=checkpoint,
            base_model=None,
            cache_dir=str(DEFAULT_CACHE_DIR),
            storage=StorageConfig(),
            tracking_uri=None,
            device="cpu",
            dtype=None,
            torch_threads=threads,
            max_new_tokens=args.max_new_tokens,
            seed=0,
        )

    # One process, no Ray: the loop a script without the actor pool would run, at 1 and at --cpus threads
    # (on a busy 2-core machine two torch threads can be far slower than one).
    images: dict[str, bytes] = {}
    if args.task in ("image2pose", "rpe"):
        from posegpt.evaluation.examples import read_images

        images = read_images(rows.files, rows.sample_ids, None)
    queries = [Query(p, images.get(s)) for p, s in zip(rows.prompts, rows.sample_ids, strict=True)]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    loop_rates = {}
    for threads in sorted({1, args.cpus}):
        torch.set_num_threads(threads)
        model = load_posegpt(spec(threads))
        model.batch(queries[: args.batch], settings)  # warm-up
        start = time.perf_counter()
        tokens = 0
        for i in range(0, n, args.batch):
            tokens += sum(a.completion_tokens for a in model.batch(queries[i : i + args.batch], settings))
        loop_rates[threads] = n / (time.perf_counter() - start)
        print(
            f"one process, {threads} thread(s): {loop_rates[threads]:6.2f} samples/s ({tokens / n:.0f} tokens per answer)"
        )
        del model
    loop_rate = max(loop_rates.values())

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    results = {}
    job = PredictJob(args.task, rows.files, rows.sample_ids, complete=rows.complete)
    for actors in sorted({1, args.cpus}):
        threads = 1
        per_actor = (args.cpus - 0.25) / actors
        _, stats = predict([job], spec(threads), args.batch, actors, per_actor, 0.0, read_cpus=0.25)
        steady = stats.rows / (stats.generation_seconds / actors)
        results[actors] = (stats.rows / stats.seconds, steady)
        print(
            f"Ray, {actors} actor(s) × {threads} thread(s): {stats.rows / stats.seconds:6.2f} samples/s wall clock "
            f"(start-up included, {stats.seconds:.1f} s), {steady:6.2f} samples/s inside the actors"
        )
    ray.shutdown()
    best = max(results)
    print(
        f"ratios: {best} actors vs the best one-process loop, steady state {results[best][1] / loop_rate:.2f}×, "
        f"wall clock {results[best][0] / loop_rate:.2f}×; {best} actors vs 1 actor (steady) "
        f"{results[best][1] / results[1][1]:.2f}×"
    )


if __name__ == "__main__":
    main()
