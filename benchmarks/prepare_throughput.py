"""Prepare-job figures on image rows: Ray Data on 2 CPUs vs a plain loop, driver CPU share, memory, two nodes.

The benchmark dataset is a SPIN-style npz of ``--rows`` image rows built from a
synthetic world's rendered images and annotations (cycled: every row is real
work, reading, decoding, cropping to 336 px, JPEG-encoding, validating and
writing). Both engines run ``pipelines.prepare.prepare`` on it; the loop is
``engine=local`` (the same work in this process), the Ray run is ``engine=ray``
on a local Ray with 2 CPUs (started before the clock starts). Prints:

- image rows per second of each and their ratio (target >= 1.6x);
- the driver's share of the Ray run's CPU time: this process's CPU seconds over
  those of this process and every process Ray started (raylet, GCS, workers),
  each sampled every 0.2 s so that processes that exit still count (target <= 10 %);
- the peak resident memory of the Ray run (the same processes, summed) at
  ``--rows`` and at ``--large-rows`` rows (target: ratio <= 1.1);
- with ``--two-nodes``: a run on a ``ray.cluster_utils.Cluster`` of two nodes on
  this machine (1 CPU each), and how many shard files each node's workers wrote
  (every write task reports its node id).

    python benchmarks/prepare_throughput.py --world outputs/world --two-nodes      # 10k, 40k rows
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
from typing import Any

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


class ProcessMeter:
    """Peak summed RSS, and CPU seconds per process, of this process and all its descendants (Ray's raylet,
    GCS, workers), sampled every ``interval`` seconds; CPU counts from the first sample of each process."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
                times = p.cpu_times()
            except psutil.Error:
                continue
            cpu = times.user + times.system
            # Latest title: a worker is "default_worker.py ..." until Ray names it "ray::...".
            try:
                self.names[p.pid] = " ".join(p.cmdline())
            except psutil.Error:
                self.names.setdefault(p.pid, "?")
            self._first.setdefault(p.pid, cpu)
            self._last[p.pid] = cpu
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def task_workers_cpu(self) -> float:
        """CPU seconds of Ray's task workers (``ray::`` processes that are not actors of Ray's own)."""
        return sum(
            self.cpu(pid)
            for pid, name in self.names.items()
            if name.startswith("ray::")
            and not name.startswith(("ray::_", "ray::Dashboard", "ray::RuntimeEnv"))
        )

    def cpu(self, pid: int | None = None) -> float:
        """CPU seconds used while measured: of one process, or of all of them."""
        pids = [pid] if pid is not None else list(self._last)
        return sum(self._last[p] - self._first[p] for p in pids if p in self._last)

    def __enter__(self) -> ProcessMeter:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run(world: Path, raw: Path, out: Path, engine: str, rows_per_task: int, address: str = "") -> Any:
    """(seconds, image rows written, the PrepareResult) of one prepare run."""
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
            f"rows_per_read_task={rows_per_task}",
            f"ray_address={address}",
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
    return seconds, result.accepted, result


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
    parser.add_argument("--rows-per-task", type=int, default=500, help="npz rows per read task")
    parser.add_argument("--two-nodes", action="store_true", help="also run on a two-node local cluster")
    parser.add_argument("--repeat", type=int, default=1, help="alternating loop / Ray runs (median ratio)")
    args = parser.parse_args()
    setup_environment()
    world = Path(args.world).resolve()

    import os

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    try:
        raw = tmp / "raw"
        bench_npz(world, args.rows, raw)
        ray.init(num_cpus=2, include_dashboard=False)
        # Loop and Ray runs alternate, so that load from other processes on the machine falls on both.
        ratios = []
        for attempt in range(args.repeat):
            cpu0 = time.process_time()
            loop_s, rows, _ = run(world, raw, tmp / f"loop{attempt}", "local", args.rows_per_task)
            loop_cpu = time.process_time() - cpu0
            print(
                f"plain loop (1 process):   {rows} image rows in {loop_s:.1f}s = {rows / loop_s:.1f} rows/s "
                f"({loop_cpu:.1f} CPU s)",
                flush=True,
            )
            with ProcessMeter() as meter:
                ray_s, rows_ray, _ = run(world, raw, tmp / f"ray{attempt}", "ray", args.rows_per_task)
            driver, total = meter.cpu(os.getpid()), meter.cpu()
            print(
                f"Ray Data (2 CPUs):        {rows_ray} image rows in {ray_s:.1f}s = {rows_ray / ray_s:.1f} rows/s "
                f"({total:.1f} CPU s)",
                flush=True,
            )
            ratios.append(loop_s / ray_s)
            workers = meter.task_workers_cpu()
            # Other processes on a shared machine slow both runs; this is the wall time two free cores need.
            print(
                f"  task workers: {workers:.1f} CPU s (the loop: {loop_cpu:.1f}); on 2 free cores the Ray run "
                f"needs >= {workers / 2:.1f}s: speed-up bound {loop_cpu / max(workers / 2, 1e-9):.2f}x"
            )
            print(f"speed-up Ray / loop:      {loop_s / ray_s:.2f}x (target >= 1.6x)")
            print(
                f"driver CPU: {driver:.1f}s of {total:.1f}s for the whole job = {100 * driver / total:.1f}% "
                "(target <= 10%)"
            )
            print(
                f"peak RSS at {rows_ray} rows: {meter.peak / 2**20:.0f} MiB (driver + Ray processes)",
                flush=True,
            )
            shutil.rmtree(tmp / f"loop{attempt}")
            shutil.rmtree(tmp / f"ray{attempt}")
        print(f"median speed-up of {len(ratios)} alternating runs: {sorted(ratios)[len(ratios) // 2]:.2f}x")
        if args.large_rows:
            big = tmp / "raw-large"
            bench_npz(world, args.large_rows, big)
            with ProcessMeter() as mem_large:
                big_s, rows_big, _ = run(world, big, tmp / "ray-large", "ray", args.rows_per_task)
            print(
                f"peak RSS at {rows_big} rows: {mem_large.peak / 2**20:.0f} MiB ({rows_big / big_s:.1f} rows/s)"
            )
            print(
                f"memory ratio {rows_big // 1000}k / {rows_ray // 1000}k rows: "
                f"{mem_large.peak / meter.peak:.2f} (target <= 1.1)",
                flush=True,
            )
            shutil.rmtree(tmp / "ray-large")
        ray.shutdown()
        if args.two_nodes:
            two_nodes(world, raw, tmp / "two", args.rows_per_task)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def two_nodes(world: Path, raw: Path, out: Path, rows_per_task: int) -> None:
    """A head and a second node (1 CPU each) on this machine; which node wrote which shard files."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        seconds, rows, result = run(world, raw, out, "ray", rows_per_task, cluster.address)
        per_node: dict[str, list[int]] = {n: [0, 0] for n in nodes}
        for _path, n, node in result.extra["files"]:
            per_node.setdefault(node, [0, 0])
            per_node[node][0] += 1
            per_node[node][1] += n
        print(f"two nodes (1 CPU each):   {rows} image rows in {seconds:.1f}s = {rows / seconds:.1f} rows/s")
        for node, (files, n) in per_node.items():
            print(f"  node {node[:12]}: wrote {files} shard files, {n} rows")
        ray.shutdown()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
