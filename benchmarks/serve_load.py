"""Load test of the Serve application: throughput, latency percentiles, refusals, autoscaling.

Two modes:

* ``load``: the load generator alone, against a running service on 127.0.0.1 (its own
  process; bounded by a request count and a duration). Closed loop at ``--concurrency``,
  or open loop at ``--rate`` requests per second. Prints throughput, p50/p95/p99 latency
  and the count of every status; ``--json`` prints one JSON line instead.

      .venv/bin/python benchmarks/serve_load.py load --url http://127.0.0.1:8000 --concurrency 32 --requests 256

* ``scenarios`` (default): starts a local Ray (``--cpus``) and Serve on a free port of
  127.0.0.1, deploys ``serve/config.yaml`` with CPU overrides on a tiny checkpoint (the
  untrained tiny PoseGPT, built into ``.cache/bench/`` unless ``--checkpoint`` is given),
  and measures, running the load generator as a separate process each time:

  1. batched (max batch 16) vs unbatched (max batch 1, reconfigured in place) throughput
     at concurrency 32; target ≥ 3x with no errors;
  2. overload at twice the batched throughput (open loop): no 5xx, requests served or
     refused quickly with 429, and full service again once the load stops;
  3. autoscaling with min 1 / max 2 replicas and a low target: sustained load adds a
     replica (read from ``serve.status()``, what ``serve status`` prints) and it goes
     again after the load;
  4. ``slow_clients``: ordinary requests while ``--slow-clients`` (300) connections send their
     bodies a byte a second; target: all succeed within the p99 they have without them + 1 s.

      .venv/bin/python benchmarks/serve_load.py scenarios [--checkpoint DIR] [--out results.json]

Every query asks for the same number of new tokens (``--max-new-tokens``), so requests
cost the same whether the model stops early or not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUERY = "Show me the pose of a person standing."

# -- the load generator --------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def summarize(records: list[tuple[int, float, float]], elapsed: float) -> dict[str, Any]:
    """``records``: (status, start offset s, latency s); status 0 is a client-side failure."""
    statuses: dict[str, int] = {}
    for status, _, _ in records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = [lat for status, _, lat in records if status == 200]
    refused = [lat for status, _, lat in records if status in (429, 503)]
    ms = 1000.0
    return {
        "sent": len(records),
        "ok": len(ok),
        "refused": len(refused),
        "errors": sum(1 for status, _, _ in records if status not in (200, 429, 503)),
        "server_5xx": sum(1 for status, _, _ in records if status >= 500),
        "statuses": statuses,
        "elapsed_s": elapsed,
        "throughput_rps": len(ok) / elapsed if elapsed > 0 else 0.0,
        "latency_ms": {
            f"p{q}": (v * ms if (v := _percentile(ok, q)) is not None else None) for q in (50, 95, 99)
        },
        "refused_latency_ms": {
            f"p{q}": (v * ms if (v := _percentile(refused, q)) is not None else None) for q in (50, 99)
        },
    }


async def generate_load(
    url: str,
    *,
    concurrency: int,
    requests: int,
    duration_s: float,
    rate: float | None,
    headers: dict[str, str],
    max_new_tokens: int,
    timeout_s: float,
) -> dict[str, Any]:
    import httpx

    host = httpx.URL(url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"the load generator only targets 127.0.0.1, not {host}")
    body = {"queries": [{"text": QUERY}], "max_new_tokens": max_new_tokens}
    records: list[tuple[int, float, float]] = []
    limits = httpx.Limits(
        max_connections=max(concurrency, 1) * (4 if rate else 1), max_keepalive_connections=concurrency
    )
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + duration_s

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/poses", json=body)
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            records.append((status, t0 - start, time.perf_counter() - t0))

        if rate is None:
            sent = 0

            async def worker() -> None:
                nonlocal sent
                while sent < requests and time.perf_counter() < deadline:
                    sent += 1
                    await one()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks = []
            for k in range(requests):
                due = start + k / rate
                if due > deadline:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    out = summarize(records, elapsed)
    out.update(concurrency=concurrency, rate=rate)
    return out


def print_summary(name: str, s: dict[str, Any]) -> None:
    lat, ref = s["latency_ms"], s["refused_latency_ms"]

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    print(
        f"{name:<28} sent {s['sent']:>5}  ok {s['ok']:>5}  refused {s['refused']:>4}  errors {s['errors']:>3}  "
        f"5xx {s['server_5xx']:>3}  {s['throughput_rps']:7.1f} req/s  "
        f"p50/p95/p99 {f(lat['p50'])}/{f(lat['p95'])}/{f(lat['p99'])} ms  "
        f"refusal p50/p99 {f(ref['p50'])}/{f(ref['p99'])} ms  statuses {s['statuses']}",
        flush=True,
    )


def load_main(args: argparse.Namespace) -> int:
    headers = {}
    if args.api_key_file:
        headers["Authorization"] = "Bearer " + Path(args.api_key_file).read_text().strip()
    summary = asyncio.run(
        generate_load(
            args.url.rstrip("/"),
            concurrency=args.concurrency,
            requests=args.requests,
            duration_s=args.duration,
            rate=args.rate,
            headers=headers,
            max_new_tokens=args.max_new_tokens,
            timeout_s=args.timeout,
        )
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary("load", summary)
    return 0


# -- scenarios -----------------------------------------------------------------------------------


def run_load_process(url: str, **options: Any) -> dict[str, Any]:
    """The load generator in its own process; returns its JSON summary."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "load", "--url", url, "--json"]
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_load_process(url: str, **options: Any) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "load", "--url", url, "--json"]
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ensure_tiny_checkpoint(cache_dir: Path) -> Path:
    """The untrained tiny PoseGPT as a checkpoint under ``cache_dir/bench`` (built once)."""
    out = cache_dir / "bench" / "tiny-checkpoint"
    if (out / "config.yaml").is_file():
        return out
    from posegpt.config import load_config
    from posegpt.model.checkpoint import save_checkpoint
    from posegpt.model.config import PoseGPTModelConfig
    from posegpt.model.posegpt_model import build_model

    cfg = load_config(
        PoseGPTModelConfig,
        REPO / "configs" / "model" / "tiny.yaml",
        [f"base_model={cache_dir / 'models' / 'tiny-llava'}", "pose_head_init=identity"],
    )
    save_checkpoint(build_model(cfg, cache_dir=cache_dir), out)
    return out


def batch_histogram(url: str) -> dict[str, int]:
    """Decoded batch sizes counted by the model replica answering ``/healthz`` (size → batches)."""
    import httpx

    return httpx.get(f"{url}/healthz", timeout=30).json()["model"]["batch_sizes"]


def histogram_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PHASES = ("batching", "overload", "autoscaling", "slow_clients")


class SlowSenders:
    """``count`` connections to 127.0.0.1 that send headers, then their body one byte a second."""

    def __init__(self, url: str, count: int, headers: dict[str, str]) -> None:
        import threading

        import httpx

        u = httpx.URL(url)
        if u.host not in ("127.0.0.1", "localhost"):
            raise SystemExit("slow senders only target 127.0.0.1")
        self.socks: list[socket.socket] = []
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"POST /v1/poses HTTP/1.1\r\nHost: {u.host}\r\nContent-Type: application/json\r\n"
        request += f"Content-Length: 100000\r\n{head}\r\n"
        for _ in range(count):
            sock = socket.create_connection((u.host, u.port), timeout=30)
            sock.sendall(request.encode() + b'{"queries": [')
            self.socks.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(1.0):
            for sock in self.socks:
                try:
                    sock.send(b" ")
                except OSError:
                    pass  # refused and closed by the service: what it should do

    def statuses(self, timeout: float) -> dict[str, int]:
        """Stop sending; the status each connection got (0: none within ``timeout``)."""
        self._stop.set()
        self._thread.join()
        out: dict[str, int] = {}
        for sock in self.socks:
            sock.settimeout(timeout)
            try:
                line = sock.recv(64).split(b"\r\n", 1)[0].decode("latin-1")
                status = line.split()[1] if line.startswith("HTTP/") else "0"
            except OSError:
                status = "0"
            finally:
                sock.close()
            out[status] = out.get(status, 0) + 1
        return out


class Scenarios:
    """The measurements of ``scenarios``, on one local Ray and Serve."""

    def __init__(self, args: argparse.Namespace, checkpoint: Path, url: str) -> None:
        self.args = args
        self.checkpoint = checkpoint
        self.url = url
        self.common = {"max_new_tokens": args.max_new_tokens}
        self.results: dict[str, Any] = {"checkpoint": str(checkpoint), "max_new_tokens": args.max_new_tokens}

    def config(self, batch: int, autoscaling: dict[str, Any] | None = None) -> dict[str, Any]:
        """``serve/config.yaml`` on CPU: one model replica (or autoscaling), max batch ``batch``."""
        from serve.deploy import load_deploy_config

        model: dict[str, Any] = {
            "user_config": {"max_batch_size": batch, "batch_wait_timeout_s": 0.01},
            "max_ongoing_requests": 32,
            "max_queued_requests": 32,
            "ray_actor_options": {"num_cpus": 1, "num_gpus": 0},
        }
        replace: dict[str, Any] = {
            "autoscaling_config": autoscaling,
            "num_replicas": None if autoscaling else 1,
        }
        return load_deploy_config(
            args={
                "checkpoint": str(self.checkpoint),
                "device": "cpu",
                "dtype": None,
                "torch_threads": 1,
                "api_key_env": None,
                "generation": {"max_new_tokens": self.args.max_new_tokens},
            },
            deployments={
                "PoseModel": model,
                "PoseIngress": {"ray_actor_options": {"num_cpus": 0}},
                # No detect requests here: the detector must not hold the benchmark's CPUs.
                "PersonDetector": {"ray_actor_options": {"num_cpus": 0, "num_gpus": 0}},
            },
            replace={"PoseModel": replace, "PersonDetector": {"autoscaling_config": None, "num_replicas": 1}},
        )

    def deploy(self, batch: int, autoscaling: dict[str, Any] | None = None) -> None:
        from serve.deploy import deploy

        t0 = time.perf_counter()
        deploy(self.config(batch, autoscaling), timeout_s=600)
        print(
            f"deployed (max batch {batch}, autoscaling {autoscaling is not None}) in {time.perf_counter() - t0:.0f}s"
        )

    def closed_loop(self, name: str) -> dict[str, Any]:
        before = batch_histogram(self.url)
        args = self.args
        out = run_load_process(
            self.url, concurrency=32, requests=args.requests, duration=args.duration, **self.common
        )
        out["batch_sizes"] = histogram_since(before, batch_histogram(self.url))
        print_summary(name, out)
        print(f"  decoded batch sizes (size: batches): {out['batch_sizes']}", flush=True)
        return out

    def batching(self) -> None:
        """Batched (max 16) vs unbatched (max 1, reconfigured in place) at concurrency 32."""
        self.deploy(16)
        run_load_process(self.url, concurrency=8, requests=32, duration=60, **self.common)  # warm-up
        batched = self.closed_loop("batched (max batch 16)")
        self.deploy(1)
        run_load_process(self.url, concurrency=4, requests=8, duration=60, **self.common)
        unbatched = self.closed_loop("unbatched (max batch 1)")
        ratio = batched["throughput_rps"] / max(unbatched["throughput_rps"], 1e-9)
        print(f"batched / unbatched throughput: {ratio:.2f}x (target >= 3x, errors must be 0)", flush=True)
        self.results.update(batched=batched, unbatched=unbatched, batching_ratio=ratio)

    def overload(self) -> None:
        """Twice the sustainable (batched) rate, open loop; then the service must be whole again."""
        self.deploy(16)
        if "batched" not in self.results:
            run_load_process(self.url, concurrency=8, requests=32, duration=60, **self.common)
            self.results["batched"] = self.closed_loop("sustainable (max batch 16)")
        rate = 2.0 * self.results["batched"]["throughput_rps"]
        seconds = self.args.overload_seconds
        overload = run_load_process(
            self.url,
            concurrency=32,
            rate=f"{rate:.2f}",
            requests=int(rate * seconds) + 1,
            duration=seconds,
            **self.common,
        )
        print_summary(f"overload at {rate:.0f} req/s", overload)
        time.sleep(2.0)
        recovery = run_load_process(self.url, concurrency=4, requests=24, duration=60, **self.common)
        print_summary("recovery after overload", recovery)
        self.results.update(overload=overload, overload_rate=rate, recovery=recovery)

    def autoscaling(self) -> None:
        """Min 1 / max 2 replicas, low target: sustained load adds a replica, it goes after the load."""
        from serve.deploy import replica_counts

        policy = {
            "min_replicas": 1,
            "initial_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 2,
            "upscale_delay_s": 3,
            "downscale_delay_s": 10,
            "look_back_period_s": 5,
        }
        self.deploy(16, policy)
        t_start = time.perf_counter()
        load = start_load_process(
            self.url, concurrency=16, requests=100_000, duration=self.args.autoscale_seconds, **self.common
        )
        scaled_up_s = scaled_down_s = None
        peak: dict[str, int] = {}
        try:
            while load.poll() is None:
                counts = replica_counts("posegpt", "PoseModel")
                if counts.get("RUNNING", 0) >= 2 and scaled_up_s is None:
                    scaled_up_s = time.perf_counter() - t_start
                    peak = counts
                    print(
                        f"serve status: PoseModel replicas {counts} after {scaled_up_s:.0f}s of load",
                        flush=True,
                    )
                time.sleep(1.0)
        finally:
            out, err = load.communicate(timeout=120)
        sustained = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-2000:]}
        if "sent" in sustained:
            print_summary("sustained load (autoscaling)", sustained)
        t_stop = time.perf_counter()
        while time.perf_counter() - t_stop < self.args.downscale_wait:
            counts = replica_counts("posegpt", "PoseModel")
            if counts.get("RUNNING", 0) == 1 and sum(counts.values()) == 1:
                scaled_down_s = time.perf_counter() - t_stop
                print(
                    f"serve status: PoseModel replicas {counts} {scaled_down_s:.0f}s after the load",
                    flush=True,
                )
                break
            time.sleep(1.0)
        print(
            f"autoscaling: 2 replicas after {_seconds(scaled_up_s)} of load, back to 1 {_seconds(scaled_down_s)} after it",
            flush=True,
        )
        self.results.update(
            autoscaling={
                "policy": policy,
                "scaled_up_after_s": scaled_up_s,
                "replicas_at_peak": peak,
                "scaled_down_after_s": scaled_down_s,
            },
            autoscaling_load=sustained,
        )

    def slow_clients(self) -> None:
        """Ordinary requests under ``--slow-clients`` slow senders: all must succeed within the p99 + 1 s
        they have without them (issue 15's target)."""
        self.deploy(16)
        run_load_process(self.url, concurrency=8, requests=32, duration=60, **self.common)  # warm-up
        base = run_load_process(self.url, concurrency=8, requests=64, duration=60, **self.common)
        print_summary("ordinary, no slow senders", base)
        t0 = time.perf_counter()
        senders = SlowSenders(self.url, self.args.slow_clients, {})
        opened_s = time.perf_counter() - t0
        under = run_load_process(self.url, concurrency=8, requests=64, duration=60, **self.common)
        print_summary(f"ordinary, {self.args.slow_clients} slow senders", under)
        slow = senders.statuses(timeout=60)
        bound = base["latency_ms"]["p99"] + 1000.0
        met = under["ok"] == under["sent"] and under["latency_ms"]["p99"] <= bound
        print(
            f"slow senders opened in {opened_s:.1f}s, their answers {slow}; ordinary p99 "
            f"{under['latency_ms']['p99']:.0f} ms vs bound {bound:.0f} ms (p99 without + 1 s): "
            f"{'met' if met else 'MISSED'}",
            flush=True,
        )
        self.results.update(
            slow_clients={"baseline": base, "under": under, "slow_statuses": slow, "met": met}
        )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}s"


def scenarios_main(args: argparse.Namespace) -> int:
    from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment

    cache = setup_environment(DEFAULT_CACHE_DIR)
    import ray
    from ray import serve

    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise SystemExit(f"unknown phases {unknown}; known: {', '.join(PHASES)}")
    checkpoint = Path(args.checkpoint) if args.checkpoint else ensure_tiny_checkpoint(cache)
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
        "(shared with other work: numbers vary run to run)",
        flush=True,
    )
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    scenarios = Scenarios(args, checkpoint, f"http://127.0.0.1:{port}")
    try:
        for phase in phases:
            getattr(scenarios, phase)()
    finally:
        serve.shutdown()
        ray.shutdown()
    if args.out:
        Path(args.out).write_text(json.dumps(scenarios.results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode")
    load = sub.add_parser("load", help="the load generator against a running service")
    load.add_argument("--url", default="http://127.0.0.1:8000")
    load.add_argument("--concurrency", type=int, default=32)
    load.add_argument("--requests", type=int, default=256, help="most requests to send")
    load.add_argument("--duration", type=float, default=60.0, help="most seconds to send for")
    load.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    load.add_argument("--api-key-file", default=None)
    load.add_argument("--max-new-tokens", type=int, default=16)
    load.add_argument("--timeout", type=float, default=60.0, help="seconds before a request counts as failed")
    load.add_argument("--json", action="store_true", help="print one JSON line")
    scen = sub.add_parser("scenarios", help="batched vs unbatched, overload and autoscaling on a local Ray")
    scen.add_argument("--checkpoint", default=None)
    scen.add_argument("--cpus", type=int, default=2)
    scen.add_argument("--requests", type=int, default=320)
    scen.add_argument("--duration", type=float, default=60.0)
    scen.add_argument("--max-new-tokens", type=int, default=16)
    scen.add_argument("--overload-seconds", type=float, default=15.0)
    scen.add_argument("--autoscale-seconds", type=float, default=60.0)
    scen.add_argument("--downscale-wait", type=float, default=90.0)
    scen.add_argument("--slow-clients", type=int, default=300, help="slow senders of the slow_clients phase")
    scen.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {', '.join(PHASES)}"
    )
    scen.add_argument("--out", default=None, help="write every figure as JSON")
    args = parser.parse_args(argv)
    if args.mode == "load":
        return load_main(args)
    if args.mode is None:
        args = parser.parse_args(["scenarios", *(argv or sys.argv[1:])])
    return scenarios_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
