"""Prepare-job throughput on image rows: Ray Data on 2 CPUs vs a plain single-process loop, and peak memory.

The benchmark dataset is a SPIN-style npz of ``--rows`` image rows built from a
synthetic world's rendered images and annotations (cycled: every row is real
work, reading, decoding, cropping to 336 px, JPEG-encoding, validating and
writing). Both engines run ``pipelines.prepare.prepare`` on it; the loop is
``engine=local`` (the same transform in this process), the Ray run is
``engine=ray`` on a local Ray with 2 CPUs (started before the clock starts).
Prints image rows per second of each and their ratio (target >= 1.6x), then the
peak resident memory of the Ray run (this process + every Ray process it
started, sampled every 0.2 s) at ``--rows`` and at ``--large-rows`` rows
(target: no growth with the dataset size).

    python benchmarks/prepare_throughput.py --world outputs/world            # 10k vs 40k rows
    python benchmarks/prepare_throughput.py --world outputs/world --rows 2000 --large-rows 0
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import setup_environment  # noqa: E402


def bench_npz(world: Path, rows: int, out: Path) -> Path:
    """``out/spin/train.npz`` with ``rows`` rows cycling through the world's SPIN and HMR2 training rows."""
    from pipelines.synthetic.writers import write_npz

    names, centers, scales, poses, shapes = [], [], [], [], []
    for sub, pose_key, shape_key, unit in (
        ("spin", "pose", "shape", 1.0),
        ("hmr2", "body_pose", "betas", 200.0),
    ):
        with np.load(world / sub / "train.npz") as npz:
            ok = npz["has_smpl" if sub == "spin" else "has_body_pose"] > 0
            names += [f"{sub}/{n}" for n in npz["imgname"][ok]]
            centers.append(npz["center"][ok])
            scale = npz["scale"][ok]
            scales.append((scale.max(axis=1) if scale.ndim == 2 else scale) / unit)
            poses.append(npz[pose_key][ok])
            shapes.append(npz[shape_key][ok])
    index = np.arange(rows) % len(names)
    path = out / "spin" / "train.npz"
    write_npz(
        path,
        {
            "imgname": np.array(names)[index],
            "center": np.concatenate(centers)[index],
            "scale": np.concatenate(scales)[index],
            "pose": np.concatenate(poses)[index],
            "shape": np.concatenate(shapes)[index],
        },
    )
    return path


class PeakRss:
    """Peak of the summed RSS of this process and all its descendants (Ray's raylet, workers, GCS)."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(world: Path, raw: Path, out: Path, engine: str, chunk_items: int) -> tuple[float, int]:
    """(seconds, image rows written) of one prepare run."""
    from pipelines.prepare import prepare
    from pipelines.prepare_config import PrepareConfig
    from posegpt.config import load_config

    cfg = load_config(
        PrepareConfig,
        None,
        [
            f"raw_root={raw}",
            f"out={out}",
            f"engine={engine}",
            "tracking.enabled=false",
            "progress_bars=false",
            f"chunk_items={chunk_items}",
            "sources.spin.reader=spin",
            "sources.spin.path=spin",
            f"sources.spin.image_root={world}",
            "sources.spin.splits=[train]",
        ],
    )
    start = time.perf_counter()
    result = prepare(cfg)
    seconds = time.perf_counter() - start
    assert result.rejected == 0, result.summary_line()
    return seconds, result.accepted


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--world", required=True, help="a synthetic world folder (python jobs/synth.py --out DIR)"
    )
    parser.add_argument("--rows", type=int, default=10_000, help="image rows of the throughput comparison")
    parser.add_argument(
        "--large-rows", type=int, default=40_000, help="rows of the memory comparison (0: skip)"
    )
    parser.add_argument("--chunk-items", type=int, default=4096)
    args = parser.parse_args()
    setup_environment()
    world = Path(args.world).resolve()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    try:
        raw = tmp / "raw"
        bench_npz(world, args.rows, raw)
        loop_s, rows = run(world, raw, tmp / "loop", "local", args.chunk_items)
        print(
            f"plain loop (1 process):   {rows} image rows in {loop_s:.1f}s = {rows / loop_s:.1f} rows/s",
            flush=True,
        )

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        with PeakRss() as mem_small:
            ray_s, rows_ray = run(world, raw, tmp / "ray", "ray", args.chunk_items)
        print(
            f"Ray Data (2 CPUs):        {rows_ray} image rows in {ray_s:.1f}s = {rows_ray / ray_s:.1f} rows/s",
            flush=True,
        )
        print(f"speed-up Ray / loop:      {loop_s / ray_s:.2f}x (target >= 1.6x)")
        print(
            f"peak RSS at {rows_ray} rows: {mem_small.peak / 2**20:.0f} MiB (driver + Ray processes)",
            flush=True,
        )
        if args.large_rows:
            big = tmp / "raw-large"
            bench_npz(world, args.large_rows, big)
            shutil.rmtree(tmp / "ray")
            with PeakRss() as mem_large:
                big_s, rows_big = run(world, big, tmp / "ray-large", "ray", args.chunk_items)
            print(
                f"peak RSS at {rows_big} rows: {mem_large.peak / 2**20:.0f} MiB ({rows_big / big_s:.1f} rows/s)"
            )
            print(
                f"memory ratio {rows_big // 1000}k / {rows_ray // 1000}k rows: {mem_large.peak / mem_small.peak:.2f} (target ~1.0)"
            )
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
