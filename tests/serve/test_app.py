"""The Serve application on a local Ray, over HTTP: every endpoint, limit, the key and failures.

The application is ``serve/config.yaml`` with test overrides (``tests/fixtures/serving.py``),
serving the ``posing_checkpoint_dir`` model, which answers the prompts of
``POSING_SAMPLES`` with their trained answers, ``<POSE>`` tokens included.
"""

from __future__ import annotations

import copy
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.model import POSING_SAMPLES
from tests.fixtures.serving import API_KEY, TEST_BATCHING, TEST_LIMITS, Served, serve_log_lines
from tests.serve.images import b64, bomb_png, data_url, png_bytes

pytestmark = pytest.mark.slow

STANDING, TWO, DESCRIBE = (s["prompt"] for s in POSING_SAMPLES)
ANSWERS = {s["prompt"]: s["answer"] for s in POSING_SAMPLES}


@pytest.fixture(scope="module")
def client(served: Served) -> httpx.Client:
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=120) as c:
        yield c


def user(content: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


def chat(client: httpx.Client, content: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/chat", json={**user(content), **extra})


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def error(response: httpx.Response, status: int, code: str, limit: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    if limit is not None:
        assert body["error"]["limit"] == f"limits.{limit}", body
        assert body["error"]["maximum"] == TEST_LIMITS[limit]
    # The error body and the response header carry the same request id (set by Serve's proxy).
    assert body["request_id"] and body["request_id"] == response.headers["x-request-id"]
    return body["error"]


def health(served: Served) -> dict[str, Any]:
    return ok(httpx.get(f"{served.url}/healthz", headers=served.headers, timeout=30))


# -- answers -----------------------------------------------------------------------------------


def test_health_is_open_and_shows_details_only_with_the_key(
    served: Served, posing_checkpoint_dir: Path
) -> None:
    response = httpx.get(f"{served.url}/healthz", timeout=30)  # no Authorization header
    assert ok(response) == {"status": "ok", "model": None}
    assert str(posing_checkpoint_dir.parent) not in response.text  # no local path for strangers
    body = ok(httpx.get(f"{served.url}/healthz", headers=served.headers, timeout=30))
    assert body["status"] == "ok"
    # A local checkpoint by its folder name only, even with the key.
    assert body["model"]["checkpoint"] == posing_checkpoint_dir.name
    assert body["model"]["batching"] == TEST_BATCHING


def test_chat_answers_with_pose_joints_and_mesh_of_the_body_model(client: httpx.Client) -> None:
    import torch

    from posegpt.body.model import default_body_model

    data = ok(chat(client, STANDING, include_vertices=True))
    assert data["text"] == ANSWERS[STANDING]
    assert data["finish_reason"] == "eos"
    (pose,) = data["poses"]
    axis_angle = np.array(pose["axis_angle"], np.float32)
    assert axis_angle.shape == (72,) and np.isfinite(axis_angle).all()
    # Joints and vertices are the body model's for that pose (computed here independently).
    body = default_body_model()
    expected = body.mesh(torch.from_numpy(axis_angle[None]))
    np.testing.assert_allclose(np.array(pose["joints"]), expected.joints[0].numpy(), atol=1e-4)
    vertices = np.array(pose["mesh"]["vertices"])
    np.testing.assert_allclose(vertices, expected.vertices[0].numpy(), atol=1e-4)
    assert data["usage"]["completion_tokens"] > 0 and data["usage"]["prompt_tokens"] > 0
    assert data["timings"]["batch_size"] >= 1 and data["timings"]["generate_ms"] > 0

    obj = client.get(pose["mesh"]["obj_url"])
    assert obj.status_code == 200 and "attachment" in obj.headers["content-disposition"]
    lines = obj.text.splitlines()
    obj_vertices = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    obj_faces = np.array([[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    np.testing.assert_allclose(obj_vertices, vertices, atol=2e-5)
    topology = ok(client.get("/v1/body"))
    np.testing.assert_array_equal(obj_faces - 1, np.array(topology["faces"]))
    np.testing.assert_array_equal(np.array(topology["faces"]), body.faces)
    assert len(topology["parts"]) == 6890 and len(topology["part_colors"]) == 24

    png = client.get(pose["mesh"]["png_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    assert image.shape == (256, 512, 3)  # front and side views
    body_pixels = (image != 255).any(axis=2)
    for panel in (body_pixels[:, :256], body_pixels[:, 256:]):
        assert 0.03 < panel.mean() < 0.6  # a body, not an empty or a filled panel


def test_two_poses_and_a_multi_turn_conversation(client: httpx.Client) -> None:
    data = ok(chat(client, TWO))
    assert data["text"] == ANSWERS[TWO] and len(data["poses"]) == 2
    assert data["poses"][0]["mesh"]["vertices"] is None  # only on request
    assert data["poses"][0]["id"] != data["poses"][1]["id"]
    history = [
        {"role": "user", "content": STANDING},
        {"role": "assistant", "content": ANSWERS[STANDING]},
        {"role": "user", "content": DESCRIBE},
    ]
    follow_up = ok(client.post("/v1/chat", json={"messages": history}))
    assert follow_up["usage"]["prompt_tokens"] > data["usage"]["prompt_tokens"]


def test_chat_with_an_inline_image(client: httpx.Client) -> None:
    data = ok(chat(client, DESCRIBE, image=data_url(png_bytes(64, 48, noise=True))))
    assert isinstance(data["text"], str)
    assert ok(chat(client, DESCRIBE, image=b64(png_bytes(32, 32))))["finish_reason"] in ("eos", "length")


def test_pose_queries_come_back_in_order_from_shared_batches(client: httpx.Client, served: Served) -> None:
    prompts = [STANDING, DESCRIBE, TWO, STANDING, DESCRIBE, TWO]
    data = ok(client.post("/v1/poses", json={"queries": [{"text": p} for p in prompts]}))
    results = data["results"]
    assert [r["text"] for r in results] == [ANSWERS[p] for p in prompts]
    assert [len(r["poses"]) for r in results] == [1, 0, 2, 1, 0, 2]
    sizes = [r["timings"]["batch_size"] for r in results]
    assert max(sizes) >= 2, sizes  # queries were decoded together
    assert all(1 <= s <= TEST_BATCHING["max_batch_size"] for s in sizes)
    counted = health(served)["model"]["batch_sizes"]
    assert any(int(size) >= 2 for size in counted), counted


def test_concurrent_requests_land_in_one_batch(client: httpx.Client) -> None:
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: chat(client, STANDING), range(4)))
    sizes = [ok(r)["timings"]["batch_size"] for r in responses]
    assert max(sizes) >= 2, sizes
    # The same greedy answer whether decoded alone or in a padded batch.
    assert {r.json()["text"] for r in responses} == {ANSWERS[STANDING]}


# -- limits ------------------------------------------------------------------------------------


def test_body_size_limit_with_and_without_content_length(client: httpx.Client) -> None:
    big = b'{"messages": [{"role": "user", "content": "' + b"a" * 400_000 + b'"}]}'
    error(
        client.post("/v1/chat", content=big, headers={"content-type": "application/json"}),
        413,
        "limit_exceeded",
        "max_body_bytes",
    )

    def chunks():  # no Content-Length: the size is counted while the body is read
        for _ in range(40):
            yield b"a" * 10_000

    err = error(
        client.post("/v1/chat", content=chunks(), headers={"content-type": "application/json"}),
        413,
        "limit_exceeded",
        "max_body_bytes",
    )
    assert err["value"] > TEST_LIMITS["max_body_bytes"]


def test_image_limits(client: httpx.Client) -> None:
    big = png_bytes(200, 200, noise=True)  # ~120 KB
    error(chat(client, DESCRIBE, image=b64(big)), 413, "limit_exceeded", "max_image_bytes")
    # A flat 600x600 image is small in bytes but over the pixel limit.
    flat = png_bytes(600, 600)
    assert len(flat) < TEST_LIMITS["max_image_bytes"]
    err = error(chat(client, DESCRIBE, image=b64(flat)), 413, "limit_exceeded", "max_image_pixels")
    assert err["value"] == 360_000
    # A header declaring 10 gigapixels, with no pixel data: refused from the header alone.
    error(
        chat(client, DESCRIBE, image=b64(bomb_png(100_000, 100_000))),
        413,
        "limit_exceeded",
        "max_image_pixels",
    )
    error(chat(client, DESCRIBE, image="https://example.com/person.jpg"), 422, "image_url_not_allowed")
    error(chat(client, DESCRIBE, image="%%%not-base64%%%"), 422, "invalid_image")
    error(
        client.post("/v1/poses", json={"queries": [{"text": DESCRIBE, "image": b64(b"no image")}]}),
        422,
        "invalid_image",
    )


def test_message_batch_and_token_limits(client: httpx.Client) -> None:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(7)]
    error(client.post("/v1/chat", json={"messages": turns}), 422, "limit_exceeded", "max_messages")
    err = error(chat(client, "a" * 501), 422, "limit_exceeded", "max_message_chars")
    assert err["value"] == 501
    queries = [{"text": STANDING}] * 9
    error(client.post("/v1/poses", json={"queries": queries}), 422, "limit_exceeded", "max_batch_queries")
    error(
        client.post("/v1/poses", json={"queries": [{"text": "b" * 501}]}),
        422,
        "limit_exceeded",
        "max_message_chars",
    )
    error(chat(client, STANDING, max_new_tokens=33), 422, "limit_exceeded", "max_new_tokens")
    # At the limits, the same requests pass.
    assert ok(chat(client, STANDING, max_new_tokens=32))["text"] == ANSWERS[STANDING]
    assert len(ok(client.post("/v1/poses", json={"queries": [{"text": DESCRIBE}] * 8}))["results"]) == 8


def test_max_new_tokens_bounds_the_answer(client: httpx.Client) -> None:
    data = ok(chat(client, TWO, max_new_tokens=2))
    assert data["finish_reason"] == "length" and data["usage"]["completion_tokens"] == 2


def test_malformed_requests(client: httpx.Client) -> None:
    error(
        client.post("/v1/chat", content=b'{"messages": [', headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )
    assert (
        "messages"
        in error(client.post("/v1/chat", json={"message": "hi"}), 422, "invalid_request")["message"]
    )
    error(
        client.post("/v1/chat", json={**user("hi"), "max_tokens": 5}), 422, "invalid_request"
    )  # unknown field
    error(
        client.post("/v1/chat", json={"messages": [{"role": "robot", "content": "hi"}]}),
        422,
        "invalid_request",
    )
    error(client.post("/v1/chat", json={"messages": []}), 422, "invalid_request")
    error(client.post("/v1/poses", json={"queries": []}), 422, "invalid_request")
    error(chat(client, STANDING, temperature=-1), 422, "invalid_request")
    # Well-formed JSON that the model cannot answer: the conversation must end with a user turn.
    ended = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert "user turn" in error(client.post("/v1/chat", json=ended), 422, "invalid_input")["message"]
    error(client.get("/v1/chat"), 405, "method_not_allowed")


def test_unknown_mesh_is_not_found(client: httpx.Client) -> None:
    error(client.get("/v1/poses/no-such-body/mesh.obj"), 404, "not_found")
    error(client.get("/v1/poses/no-such-body/mesh.png"), 404, "not_found")


# -- access, schema, page ----------------------------------------------------------------------


def test_api_key_is_required_everywhere_but_healthz(served: Served) -> None:
    paths = ["/static/app.js", "/openapi.json", "/v1/body", "/v1/poses/x/mesh.obj", "/v1/models"]
    wrong = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"})
    for path in paths:
        for headers in wrong:
            r = httpx.get(served.url + path, headers=headers, timeout=30)
            error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
    # The pages a browser opens lead to the sign-in form instead.
    for path in ("/", "/docs", "/redoc"):
        for headers in wrong:
            r = httpx.get(served.url + path, headers=headers, timeout=30)
            assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}", r.text
    r = httpx.post(f"{served.url}/v1/chat", json=user(STANDING), timeout=30)
    assert "missing Authorization" in error(r, 401, "unauthorized")["message"]
    assert httpx.get(f"{served.url}/healthz", timeout=30).status_code == 200
    right = httpx.post(f"{served.url}/v1/chat", json=user(STANDING), headers=served.headers, timeout=60)
    assert ok(right)["text"] == ANSWERS[STANDING]


def test_openapi_schema_and_docs(client: httpx.Client) -> None:
    schema = ok(client.get("/openapi.json"))
    for path in (
        "/v1/chat",
        "/v1/poses",
        "/v1/poses/{body_id}/mesh.obj",
        "/v1/poses/{body_id}/mesh.png",
        "/healthz",
    ):
        assert path in schema["paths"], path
    assert "ChatRequest" in schema["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_page_and_its_files_are_served_from_here_only(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "/static/app.js" in page.text and "/static/viewer.js" in page.text
    for name in ("app.js", "viewer.js", "style.css"):
        file = client.get(f"/static/{name}")
        assert file.status_code == 200 and len(file.text) > 100
        assert "http://" not in file.text and "https://" not in file.text, name


# -- failures and reconfiguration --------------------------------------------------------------


def test_health_is_not_ready_before_the_model_is_loaded(broken_served: Served) -> None:
    log = broken_served.health_log
    statuses = [status for status, _, _ in log]
    assert statuses[-1] == 200 and log[-1][1] == "ok"
    first_ok = statuses.index(200)
    # No route yet (404, or 401 when the request falls through to the API-key application that
    # another fixture serves at "/"), then "loading" while the model loads, then ready for good.
    assert set(statuses[:first_ok]) <= {0, 401, 404, 503}, log
    assert all(status == 200 for status in statuses[first_ok:]), log
    assert all(health == "loading" for status, health, _ in log if status == 503), log
    # A 200 needs a model replica that has finished loading: none came while the model had no replica.
    assert all(running for status, _, running in log[first_ok + 1 :]), log


def test_model_failure_is_a_500_with_request_id_and_the_replica_keeps_serving(broken_served: Served) -> None:
    with httpx.Client(base_url=broken_served.url, timeout=120) as client:
        failed = chat(client, STANDING)  # the pose head gives NaN: the body model refuses it
        message = error(failed, 500, "internal")["message"]
        rid = failed.json()["request_id"]
        assert rid in message
        # Answers without a pose do not touch the head: the same replica keeps answering.
        assert ok(chat(client, DESCRIBE))["poses"] == []
        mixed = client.post("/v1/poses", json={"queries": [{"text": DESCRIBE}, {"text": STANDING}]})
        error(mixed, 500, "internal")
        mixed_rid = mixed.json()["request_id"]
        assert ok(chat(client, DESCRIBE))["text"] == ANSWERS[DESCRIBE]
    # The traceback is logged once, by the model replica, with the request id.
    lines = serve_log_lines(f"request {rid} failed")
    assert len(lines) == 1, lines
    assert len(serve_log_lines(f"request {mixed_rid}/1 failed")) == 1
    assert serve_log_lines(f"request {mixed_rid}/0 failed", timeout=0) == []  # the good query of the batch


def _with_batching(config: dict[str, Any], batching: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    model = next(d for d in out["applications"][0]["deployments"] if d["name"] == "PoseModel")
    model["user_config"] = dict(batching)
    return out


def _wait_batching(served: Served, batching: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        model = health(served)["model"]
        if model["batching"] == batching or time.monotonic() > deadline:
            return model
        time.sleep(0.5)


def test_reconfigure_changes_batching_in_place(served: Served, client: httpx.Client) -> None:
    from serve.deploy import deploy

    before = health(served)["model"]
    unbatched = {"max_batch_size": 1, "batch_wait_timeout_s": 0.25}
    try:
        deploy(_with_batching(served.config, unbatched), timeout_s=120)
        after = _wait_batching(served, unbatched)
        assert after["batching"] == unbatched
        assert after["replica"] == before["replica"]  # the same replica: reconfigured, not restarted
        data = ok(client.post("/v1/poses", json={"queries": [{"text": STANDING}] * 4}))
        assert [r["timings"]["batch_size"] for r in data["results"]] == [1, 1, 1, 1]
    finally:
        deploy(served.config, timeout_s=120)
        assert _wait_batching(served, TEST_BATCHING)["batching"] == TEST_BATCHING
    data = ok(client.post("/v1/poses", json={"queries": [{"text": STANDING}] * 4}))
    assert max(r["timings"]["batch_size"] for r in data["results"]) >= 2
