"""A short run of the load generator (its own process) against the test service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.serving import Served

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


def test_short_load_run_has_no_errors(served: Served) -> None:
    cmd = [
        sys.executable, str(SCRIPT), "load", "--url", served.url, "--api-key-file", str(served.key_file),
        "--concurrency", "8", "--requests", "24", "--duration", "60", "--max-new-tokens", "8", "--json",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["sent"] == 24 and summary["ok"] == 24, summary
    assert summary["errors"] == 0 and summary["server_5xx"] == 0 and summary["statuses"] == {"200": 24}
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert summary["throughput_rps"] == pytest.approx(24 / summary["elapsed_s"])


def test_load_generator_refuses_other_hosts() -> None:
    cmd = [sys.executable, str(SCRIPT), "load", "--url", "http://192.0.2.1:8000", "--requests", "1", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and "only targets 127.0.0.1" in done.stderr
