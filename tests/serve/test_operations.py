"""The operational surface: Serve metrics in Prometheus form and the model replica's health check."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.fixtures.model import POSING_SAMPLES
from tests.fixtures.serving import APP, Served

pytestmark = pytest.mark.slow

STANDING = POSING_SAMPLES[0]["prompt"]


def _scrape(pattern: str, timeout: float = 90.0) -> list[str]:
    """Lines of the node's Prometheus endpoint (Ray's metrics agent) matching ``pattern``, once there are any."""
    import ray

    port = ray._private.worker._global_node.metrics_export_port
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except httpx.HTTPError:
            text = ""
        lines = [ln for ln in text.splitlines() if re.search(pattern, ln) and not ln.startswith("#")]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(2.0)


def _value(lines: list[str], *must: str) -> float:
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if all(m in ln for m in must))


def test_metrics_count_batches_poses_and_responses_by_status(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=120) as client:
        data = client.post("/v1/poses", json={"queries": [{"text": STANDING}] * 4}).json()
        assert sum(len(r["poses"]) for r in data["results"]) == 4
        assert client.post("/v1/chat", json={"messages": []}).status_code == 422
    batches = _scrape(r"^ray_posegpt_batch_size_count\{")
    assert batches and _value(batches) >= 1, batches
    poses = _scrape(r"^ray_posegpt_poses_total\{")
    assert _value(poses) >= 4, poses
    assert _scrape(r"^ray_posegpt_queue_seconds_bucket\{")
    responses = _scrape(r"^ray_posegpt_http_responses_total\{.*status=\"422\"")
    assert _value(responses, 'route="/v1/chat"') >= 1, responses
    assert _value(_scrape(r"^ray_posegpt_http_responses_total\{.*status=\"200\""), 'route="/v1/poses"') >= 1


def test_health_check_runs_a_generation_that_stays_out_of_the_statistics(served: Served) -> None:
    from ray import serve

    handle = serve.get_deployment_handle("PoseModel", app_name=APP)
    before = handle.info.remote().result(timeout_s=60)["batch_sizes"]
    t0 = time.perf_counter()
    assert handle.check_health.remote().result(timeout_s=60) is None
    assert time.perf_counter() - t0 < 30
    assert handle.info.remote().result(timeout_s=60)["batch_sizes"] == before
