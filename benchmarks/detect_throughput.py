"""Person detection throughput on the CPU: batched vs one image at a time (and, with a service, latency).

    python benchmarks/detect_throughput.py --world outputs/world-small
    python benchmarks/detect_throughput.py --detector-config outputs/detector/detector.yaml --images-from outputs/world-small
    python benchmarks/detect_throughput.py --world outputs/world-small --service http://127.0.0.1:8000
    python benchmarks/detect_throughput.py --world outputs/world-small --serve-checkpoint tiny

Without ``--detector-config`` the synthetic detector of ``--world`` is trained or
reused (``.cache/detector``). Images are the world's held-out images. Prints
images/s for one image per call and for batches, and their ratio, measured in
this run. With ``--service`` (a running PoseGPT service with a detector) or
``--serve-checkpoint`` (a checkpoint folder, or ``tiny``: an untrained tiny model,
served here on a local Ray with this detector), it also sends a 3-person scene
with ``detect: true`` and prints the end-to-end latency next to the whole-image
request.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402


def _images(world: Path, count: int) -> tuple[list[Any], list[Any]]:
    """``count`` held-out images (cycled) and the held-out labelled items of the world."""
    import numpy as np
    from PIL import Image

    from pipelines.synthetic.yolo_dataset import world_labeled_images

    items = [it for it in world_labeled_images(world).items if it.split != "train"]
    if not items:
        raise SystemExit(f"{world}: no held-out images")
    arrays = []
    for k in range(count):
        with Image.open(items[k % len(items)].path) as im:
            arrays.append(np.asarray(im.convert("RGB")))
    return arrays, items


def _rate(fn: Any, n_images: int, repeats: int) -> float:
    """Best images/s over ``repeats`` runs of ``fn`` (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def detection_throughput(
    detector: Any, images: list[Any], batch_sizes: list[int], repeats: int
) -> dict[str, float]:
    from dataclasses import replace

    from posegpt.detect import PersonDetector

    detector.detect(images[:2])  # warm-up: predictor set-up, first-call allocations
    out = {"one_at_a_time": _rate(lambda: [detector.detect_one(im) for im in images], len(images), repeats)}
    for size in batch_sizes:
        batched = PersonDetector(replace(detector.cfg, batch_size=size))
        batched.detect(images[:size])
        out[f"batch_{size}"] = _rate(lambda b=batched: b.detect(images), len(images), repeats)
    return out


def _post(url: str, body: dict[str, Any], timeout: float = 300.0) -> tuple[float, dict[str, Any]]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    return time.perf_counter() - start, payload


def service_latency(service: str, scene_path: Path, repeats: int) -> dict[str, float]:
    """Median seconds of a pose query on a 3-person scene, with and without ``detect``."""
    encoded = base64.b64encode(scene_path.read_bytes()).decode()
    query = {"text": "What is the pose of each person?", "image": encoded}
    out: dict[str, float] = {}
    for detect in (False, True):
        times, detect_ms, people = [], [], 0
        for _ in range(repeats):
            seconds, payload = _post(f"{service}/v1/poses", {"queries": [{**query, "detect": detect}]})
            times.append(seconds)
            result = payload["results"][0]
            people = len(result.get("people") or [])
            detect_ms.append(result["timings"].get("detect_ms") or 0.0)
        out[f"poses_detect_{str(detect).lower()}_s"] = statistics.median(times)
        if detect:
            out["people_found"] = float(people)
            out["detect_ms"] = statistics.median(detect_ms)
    return out


def start_service(checkpoint: str, detector_cfg: Any, max_new_tokens: int) -> tuple[str, Any]:
    """Serve ``checkpoint`` (or an untrained tiny model for ``tiny``) with the detector on a local Ray."""
    import socket

    import ray
    from ray import serve

    from serve.app import app

    if checkpoint == "tiny":
        checkpoint = str(_tiny_checkpoint())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "checkpoint": checkpoint,
        "generation.max_new_tokens": str(max_new_tokens),
        "detector.weights": detector_cfg.weights,
        "detector.image_size": str(detector_cfg.image_size),
        "detector.padding": str(detector_cfg.padding),
    }
    serve.run(app(args), name="detect-bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5):
                break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)

    def stop() -> None:
        serve.shutdown()
        ray.shutdown()

    return url, stop


def _tiny_checkpoint() -> Path:
    """An untrained tiny PoseGPT checkpoint (answers run to ``max_new_tokens``), built once in the cache."""
    import torch

    from posegpt.config import load_config
    from posegpt.model.checkpoint import save_checkpoint
    from posegpt.model.config import PoseGPTModelConfig
    from posegpt.model.posegpt_model import build_model

    out = DEFAULT_CACHE_DIR / "detector" / "bench-checkpoint"
    if (out / "config.yaml").is_file():
        return out
    cfg = load_config(
        PoseGPTModelConfig,
        REPO / "configs" / "model" / "tiny.yaml",
        [f"base_model={DEFAULT_CACHE_DIR / 'models' / 'tiny-llava'}", "pose_head_init=identity"],
    )
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--world", type=Path, help="synthetic world (images, and the detector to train or reuse)"
    )
    parser.add_argument(
        "--detector-config", type=Path, help="detector.yaml written by jobs/train_detector.py"
    )
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--batch-sizes", default="8,16", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (the best is kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--service", default=None, help="base URL of a running service for the latency figure"
    )
    parser.add_argument(
        "--serve-checkpoint", default=None, help="serve this checkpoint (or 'tiny') here instead"
    )
    parser.add_argument("--max-new-tokens", type=int, default=8, help="answer length with --serve-checkpoint")
    args = parser.parse_args(argv)
    if args.world is None:
        parser.error("--world is needed (images, and the detector unless --detector-config is given)")
    setup_environment(DEFAULT_CACHE_DIR)

    import torch

    from posegpt.config import load_config
    from posegpt.detect import DetectorConfig, DetectorTrainConfig, PersonDetector

    torch.set_num_threads(args.threads)
    if args.detector_config is not None:
        cfg = load_config(DetectorConfig, args.detector_config)
    else:
        from jobs.train_detector import DEFAULT_PRESET, run

        train_cfg = load_config(DetectorTrainConfig, DEFAULT_PRESET, ["tracking.enabled=false"])
        out = DEFAULT_CACHE_DIR / "detector" / "benchmark"
        report = run(train_cfg, args.world, out, weights_cache=DEFAULT_CACHE_DIR / "detector")
        print(
            f"detector: mAP@0.5 {report['map50']:.3f} (held out), trained in {report['train_seconds']:.0f}s"
        )
        cfg = load_config(DetectorConfig, out / "detector.yaml")
    images, items = _images(args.world, args.images)
    detector = PersonDetector(cfg)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    rates = detection_throughput(detector, images, sizes, args.repeats)
    side = images[0].shape[0]
    print(
        f"detection on CPU ({args.threads} threads, {side}px images, imgsz {cfg.image_size}, {args.images} images):"
    )
    single = rates["one_at_a_time"]
    for name, rate in rates.items():
        print(f"  {name:>14}: {rate:7.1f} images/s  ({rate / single:.2f}x one at a time)")
    if args.service or args.serve_checkpoint:
        scene = next((it for it in items if it.kind == "scene" and len(it.boxes) == 3), None)
        if scene is None:
            print("service: no held-out 3-person scene in this world", file=sys.stderr)
            return 1
        stop = None
        url = args.service
        if args.serve_checkpoint:
            url, stop = start_service(args.serve_checkpoint, cfg, args.max_new_tokens)
        try:
            service_latency(url.rstrip("/"), scene.path, 1)  # warm-up: first batch, first detection
            latency = service_latency(url.rstrip("/"), scene.path, args.repeats)
        finally:
            if stop is not None:
                stop()
        print(
            f"service, 3-person scene: whole image {latency['poses_detect_false_s'] * 1000:.0f} ms, "
            f"detect=true {latency['poses_detect_true_s'] * 1000:.0f} ms "
            f"({int(latency['people_found'])} people answered; detection and crops {latency['detect_ms']:.0f} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
