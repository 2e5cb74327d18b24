"""Training throughput of the tiny preset through Ray Train: 1 worker vs 2, start-up, checkpoints.

CPU part (always): the tiny preset for ``--steps`` steps with 1 worker (2 torch threads)
and with 2 workers (1 thread each) on a 2-CPU Ray, then a resumed fit of the 2-worker
run. Prints median samples/s and tokens/s over the steps after ``--skip`` warm-up
steps, their 2-vs-1 ratio, the time from ``fit()`` to the first finished step, and
the time to save (DeepSpeed state + model checkpoint + report) and to restore
(download + DeepSpeed load) a checkpoint, all measured in this run.

GPU part (``--gpu``, needs CUDA): a 7B-shaped smoke run: a LLaVA with LLaVA-1.5-7B's
layer shapes (Llama width 4096, MLP 11008, 32 heads; CLIP-L/14 at 336 px) but
``--gpu-layers`` layers each, random weights, LoRA r 128, bf16, ZeRO 2, one worker per
GPU. Prints tokens/s, peak GPU memory per worker and the model FLOPs utilisation
(forward + backward through frozen weights: 4 FLOPs per parameter and token, 6 for
trainable ones, vision tower forward only; attention scores left out).

    python benchmarks/train_throughput.py --shards outputs/demo/shards --base-model .cache/models/tiny-llava
    python benchmarks/train_throughput.py --shards outputs/demo/shards --gpu --gpu-workers 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import setup_environment  # noqa: E402

TINY = REPO / "configs" / "train" / "tiny.yaml"
PAPER_7B = REPO / "configs" / "train" / "llava-1.5-7b.yaml"
PEAK_BF16_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L40S": 362.0, "A10G": 125.0}
"""Dense bf16 peak of common GPUs (TFLOP/s), for MFU; ``--peak-tflops`` overrides."""


def fit_once(preset: Path, overrides: list[str]) -> dict[str, Any]:
    """One ``fit()``: its wall time, the time to the first finished step and the run's metrics."""
    import mlflow

    from posegpt.config import load_config
    from posegpt.training.config import TrainConfig
    from posegpt.training.trainer import build_trainer, check_cluster, preflight, resolve_config

    cfg = resolve_config(load_config(TrainConfig, preset, overrides))
    manifest = preflight(cfg)
    check_cluster(cfg)
    trainer = build_trainer(cfg, manifest)
    t0 = time.time()
    trainer.fit()
    fit_s = time.time() - t0
    status = json.loads(Path(cfg.logging.status_dir or "", "rank0.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    run_id = Path(cfg.storage_path, cfg.run_name, "mlflow_run_id").read_text().strip()

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    return {
        "fit_s": fit_s,
        "first_step_s": status["first_step_done_at"] - t0,
        "save_s": status.get("checkpoint_save_s"),
        "restore_s": status.get("restore_s"),
        "history": {
            key: history(key)
            for key in (
                "train/samples_per_s",
                "train/tokens_per_s",
                "train/step_time_s",
                "perf/data_wait_s",
                "perf/data_wait_share",
                "gpu/peak_memory_gb",
                "model/params_total",
                "model/params_trainable",
                "model/params_vision",
            )
        },
    }


def steady(values: list[tuple[int, float]], skip: int, after: int = 0) -> float:
    kept = [v for s, v in values if s > after + skip]
    return statistics.median(kept) if kept else float("nan")


def cpu_part(args: argparse.Namespace, work: Path) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    common = [
        f"data.shard_root={args.shards}",
        f"storage_path={work / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"schedule.max_steps={args.steps}",
        f"checkpoint.every={args.steps}",
        "validation.every=0",
        "logging.every=1",
        "logging.register_model=false",
        f"data.batch_size_per_worker={args.batch}",
    ]
    if args.base_model:
        common += [f"model.base_model={args.base_model}", "model.build_tiny_if_missing=false"]
    runs = {
        "1 worker (2 threads)": [
            "run_name=bench-1w",
            "scaling.num_workers=1",
            "scaling.resources_per_worker={CPU: 1}",
            "scaling.torch_threads=2",
            f"logging.status_dir={work / 'status-1w'}",
        ],
        "2 workers (1 thread each)": [
            "run_name=bench-2w",
            "scaling.num_workers=2",
            "scaling.resources_per_worker={CPU: 0.5}",
            "scaling.torch_threads=1",
            f"logging.status_dir={work / 'status-2w'}",
        ],
    }
    results = {}
    for name, extra in runs.items():
        print(f"-- {name}: {args.steps} steps", flush=True)
        results[name] = fit_once(TINY, [*common, *extra])
    print(f"-- resume of the 2-worker run for {args.resume_steps} more steps", flush=True)
    resumed = fit_once(
        TINY,
        [*common, *runs["2 workers (1 thread each)"], f"schedule.max_steps={args.steps + args.resume_steps}"],
    )
    ray.shutdown()

    print()
    print(f"tiny preset, {args.batch} samples per worker per step, 2-CPU Ray, median of steps > {args.skip}")
    print(f"{'':28s} {'samples/s':>10s} {'tokens/s':>10s} {'fit->1st step':>14s} {'ckpt save':>10s}")
    rates = {}
    for name, r in results.items():
        sps = steady(r["history"]["train/samples_per_s"], args.skip)
        tps = steady(r["history"]["train/tokens_per_s"], args.skip)
        rates[name] = (sps, tps)
        print(f"{name:28s} {sps:10.1f} {tps:10.0f} {r['first_step_s']:13.1f}s {r['save_s']:9.2f}s")
    (s1, t1), (s2, t2) = rates.values()
    print(f"2 workers / 1 worker: samples/s x{s2 / s1:.2f}, tokens/s x{t2 / t1:.2f}")
    print(
        f"resumed fit: fit->first step {resumed['first_step_s']:.1f}s, "
        f"checkpoint restore (download + DeepSpeed load) {resumed['restore_s']:.2f}s"
    )


def gpu_part(args: argparse.Namespace, work: Path) -> None:
    import ray
    import torch

    from posegpt.model.config import TinyBaseConfig
    from posegpt.model.tiny import BUILTIN_CORPUS, build_tiny_base

    if not torch.cuda.is_available():
        print("--gpu: no CUDA device here, GPU part skipped")
        return
    gpu_name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu_name), None)
    shape = TinyBaseConfig(
        image_size=336,
        patch_size=14,
        vision_layers=args.gpu_layers,
        vision_width=1024,
        text_layers=args.gpu_layers,
        text_width=4096,
        text_heads=32,
        text_intermediate=11008,
        context_length=4096,
        vocab_size=32000,
    )
    base = build_tiny_base(work / "llava-7b-shaped", list(BUILTIN_CORPUS), shape)
    ray.init(include_dashboard=False, log_to_driver=False)
    overrides = [
        "run_name=bench-7b-shaped",
        f"data.shard_root={args.shards}",
        f"storage_path={work / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"model.base_model={base}",
        "model.build_tiny_if_missing=false",
        "model.gradient_checkpointing=false",
        f"schedule.max_steps={args.gpu_steps}",
        f"checkpoint.every={args.gpu_steps}",
        "validation.every=0",
        "logging.every=1",
        "logging.register_model=false",
        f"logging.status_dir={work / 'status-gpu'}",
        f"scaling.num_workers={args.gpu_workers}",
        "scaling.resources_per_worker={CPU: 4, GPU: 1}",
        "data.read_cpus=1",
    ]
    print(
        f"-- 7B-shaped smoke run on {args.gpu_workers} x {gpu_name}, {args.gpu_layers} layers, bf16, ZeRO 2"
    )
    r = fit_once(PAPER_7B, overrides)
    ray.shutdown()
    h = r["history"]
    tokens = steady(h["train/tokens_per_s"], args.skip)
    samples = steady(h["train/samples_per_s"], args.skip)
    total = h["model/params_total"][0][1]
    trainable = h["model/params_trainable"][0][1]
    vision = h["model/params_vision"][0][1]
    language = total - vision
    # Per token through the language model: forward 2N, backward to the inputs 2N, weight grads 2N_trainable.
    flops_per_token = 4 * (language - trainable) + 6 * trainable
    patches = (336 // 14) ** 2
    images_per_sample = 3 / 4  # image2pose and vqa rows carry an image (ratio 2:1:1)
    flops = tokens * flops_per_token + samples * images_per_sample * patches * 2 * vision
    peak_mem = max((v for _, v in h["gpu/peak_memory_gb"]), default=float("nan"))
    print(f"tokens/s (all workers): {tokens:.0f}; samples/s: {samples:.1f}")
    print(f"peak GPU memory per worker: {peak_mem:.1f} GiB")
    print(
        f"params: total {total / 1e9:.2f} B, trainable {trainable / 1e6:.1f} M, vision {vision / 1e6:.0f} M"
    )
    if peak:
        mfu = flops / (args.gpu_workers * peak * 1e12)
        print(
            f"model FLOPs: {flops / 1e12:.1f} TFLOP/s of {args.gpu_workers} x {peak:.0f} peak: MFU {mfu:.1%}"
        )
    else:
        print(f"model FLOPs: {flops / 1e12:.1f} TFLOP/s (pass --peak-tflops for MFU on {gpu_name})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", required=True, help="shard folder written by jobs/prepare.py")
    parser.add_argument("--base-model", help="tiny LLaVA folder (default: the preset's, built if missing)")
    parser.add_argument("--steps", type=int, default=30, help="steps per CPU run")
    parser.add_argument("--resume-steps", type=int, default=5, help="steps of the resumed fit")
    parser.add_argument("--batch", type=int, default=8, help="samples per worker per step")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the medians")
    parser.add_argument("--gpu", action="store_true", help="also run the 7B-shaped GPU smoke run")
    parser.add_argument("--gpu-workers", type=int, default=1)
    parser.add_argument(
        "--gpu-layers", type=int, default=4, help="decoder and vision layers of the smoke model"
    )
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, help="bf16 peak of one GPU, for MFU")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    args = parser.parse_args(argv)
    setup_environment()
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_cpu:
            cpu_part(args, work)
        if args.gpu:
            gpu_part(args, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
