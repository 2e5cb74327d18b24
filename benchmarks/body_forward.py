"""Body model speed: smplx mesh forward vs joints-only forward kinematics, and model load time.

Prints poses per second at one batch size on CPU for the full smplx forward (mesh and
joints) and for ``BodyModel.joints`` (forward kinematics only), their ratio (target:
joints-only at least 20x faster), and the time of the first ``BodyModel()`` in a fresh
process on a clean cache (procedural body generated) and on a warm cache (loaded),
targets 5 s and 0.5 s.

    .venv/bin/python benchmarks/body_forward.py [--batch 1024] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from posegpt.runtime import setup_environment  # noqa: E402

_LOAD_SNIPPET = """
import sys, time
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads({threads})
t0 = time.perf_counter()
from posegpt.body.model import BodyModel
t1 = time.perf_counter()
BodyModel(cache_dir={cache!r})
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def _time_load(cache: str, threads: int) -> tuple[float, float]:
    """(import seconds, first BodyModel() seconds) in a fresh interpreter."""
    code = _LOAD_SNIPPET.format(repo=str(REPO), cache=cache, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    imp, build = (float(x) for x in out.split()[-2:])
    return imp, build


def _rate(fn, batch: int, min_seconds: float) -> float:
    fn()  # warm-up (allocations, lazy init)
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and n >= 3:
            return n * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    # One thread by default: on a shared 2-core machine two threads make these small
    # kernels wait on each other, and the numbers swing with the other processes' load.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per row")
    args = parser.parse_args()
    setup_environment()

    import torch

    from posegpt.body.model import BodyModel

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="body-bench-") as cache:
        imp_cold, cold = _time_load(cache, args.threads)
        imp_warm, warm = _time_load(cache, args.threads)
        body = BodyModel(cache_dir=cache)

    poses = torch.randn(args.batch, 72, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        mesh_rate = _rate(lambda: body.mesh(poses), args.batch, args.seconds)
        joints_rate = _rate(lambda: body.joints(poses), args.batch, args.seconds)
        err = float((body.joints(poses) - body.mesh(poses).joints).abs().max())

    def joints_backward() -> None:
        p = poses.clone().requires_grad_(True)
        body.joints(p).square().sum().backward()

    grad_rate = _rate(joints_backward, args.batch, args.seconds)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"body forward, batch {args.batch}, CPU, {args.threads} torch threads (load average {load})")
    print(f"{'path':<34}{'poses/s':>12}{'vs mesh':>10}")
    print(f"{'smplx mesh forward (no grad)':<34}{mesh_rate:>12,.0f}{1.0:>9.1f}x")
    print(f"{'joints-only FK (no grad)':<34}{joints_rate:>12,.0f}{joints_rate / mesh_rate:>9.1f}x")
    print(f"{'joints-only FK forward+backward':<34}{grad_rate:>12,.0f}{grad_rate / mesh_rate:>9.1f}x")
    print(f"max |joints-only - mesh joints|: {err:.2e} m")
    print()
    print(f"{'first BodyModel() in a new process':<40}{'seconds':>9}  target")
    print(f"{'clean cache (generates the body)':<40}{cold:>9.3f}  < 5")
    print(f"{'warm cache (loads the file)':<40}{warm:>9.3f}  < 0.5")
    print(f"(import of posegpt.body.model before that: {imp_cold:.2f} s / {imp_warm:.2f} s)")


if __name__ == "__main__":
    main()
