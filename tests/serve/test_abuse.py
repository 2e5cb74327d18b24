"""Requests that once hurt the service, against the running application: each must get a 4xx or a
correct answer, never a 5xx, and must not hurt the requests around it or restart a replica.

Each test reproduces a failure of the abuse run in issue 15 and would have failed before the fix:
a poisoned query co-batched with normal ones, a 1 × N strip image, seeds outside int64, tiny
temperatures, lone surrogates, decoder internals in messages, TIFF/BMP images, missing
``nosniff``, a million-item body, slow senders and early refusals on Content-Length.
"""

from __future__ import annotations

import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fixtures.model import POSING_SAMPLES
from tests.fixtures.serving import APP, TEST_LIMITS, Served, serve_log_lines
from tests.serve.images import b64, data_url, png_bytes

pytestmark = pytest.mark.slow

STANDING, TWO, DESCRIBE = (s["prompt"] for s in POSING_SAMPLES)
ANSWERS = {s["prompt"]: s["answer"] for s in POSING_SAMPLES}
SURROGATE = "Show me \ud800 a pose"
"""A lone surrogate: valid in JSON (``\\ud800``), not valid Unicode; the tokenizer raises TypeError on it."""


@pytest.fixture(scope="module")
def client(served: Served) -> httpx.Client:
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=120) as c:
        yield c


def chat(client: httpx.Client, content: str, **extra: Any) -> httpx.Response:
    # json.dumps keeps a lone surrogate as the escape \ud800, as an attacker would send it.
    body = json.dumps({"messages": [{"role": "user", "content": content}], **extra})
    return client.post("/v1/chat", content=body, headers={"content-type": "application/json"})


def refused(response: httpx.Response, status: int, code: str, limit: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["code"] == code, err
    if limit is not None:
        assert err["limit"] == f"limits.{limit}", err
    return err


def model_replica(served: Served) -> str:
    return httpx.get(f"{served.url}/healthz", headers=served.headers, timeout=30).json()["model"]["replica"]


# -- isolation ---------------------------------------------------------------------------------


def test_a_query_that_fails_inside_the_model_fails_alone(served: Served) -> None:
    """Straight to the model deployment (no ingress checks): the poisoned query is co-batched."""
    from ray import serve

    handle = serve.get_deployment_handle("PoseModel", app_name=APP)

    def query(text: str, k: int) -> dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": text}],
            "image": None,
            "max_new_tokens": 16,
            "temperature": 0.0,
            "seed": None,
            "request_id": f"isolation/{k}",
        }

    texts = [STANDING] * 5 + [SURROGATE] + [STANDING] * 5
    # Sent together: the batch wait (0.25 s) puts them in one decoding round.
    responses = [handle.answer.remote(query(t, k)) for k, t in enumerate(texts)]
    results = [r.result(timeout_s=120) for r in responses]
    poisoned = results.pop(5)
    assert poisoned["error"]["code"] == "internal" and poisoned["error"]["request_id"] == "isolation/5"
    assert [r.get("text") for r in results] == [ANSWERS[STANDING]] * 10, results
    assert max(r["timings"]["batch_size"] for r in results) >= 2
    assert len(serve_log_lines("request isolation/5 failed its checks")) == 1


def test_lone_surrogates_anywhere_in_a_request_get_a_4xx_beside_normal_answers(
    served: Served, client: httpx.Client
) -> None:
    replica = model_replica(served)
    user = {"role": "user", "content": STANDING}
    poisoned = [
        {"messages": [{"role": "user", "content": SURROGATE}]},
        {"messages": [user], "\ud800": 1},  # an unknown field whose name the error quotes
        {"messages": [user], "image": "data:image/\ud800;base64,AAAA"},
        {"messages": [{"role": "\ud800", "content": "hi"}]},
    ]
    bodies = [{"messages": [user]}] * 4 + poisoned + [{"messages": [user]}] * 4

    def post(body: dict[str, Any]) -> httpx.Response:
        return client.post("/v1/chat", content=json.dumps(body), headers={"content-type": "application/json"})

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(post, bodies))
    bad = responses[4:8]
    assert [r.status_code for r in bad] == [422] * 4, [r.text for r in bad]
    good = responses[:4] + responses[8:]
    assert [r.status_code for r in good] == [200] * 8, [r.text for r in good]
    assert {r.json()["text"] for r in good} == {ANSWERS[STANDING]}
    assert model_replica(served) == replica


# -- images: shape limits, types, internals ----------------------------------------------------


def test_strip_images_are_refused_from_their_header(served: Served, client: httpx.Client) -> None:
    """A 1 × 200,000 strip is within the pixel limit; squared for the vision tower it was 40 G pixels."""
    replica = model_replica(served)
    strip = png_bytes(1, 200_000)
    assert len(strip) < TEST_LIMITS["max_image_bytes"]
    assert 200_000 <= TEST_LIMITS["max_image_pixels"]
    err = refused(chat(client, DESCRIBE, image=b64(strip)), 413, "limit_exceeded", "max_image_side")
    assert (err["value"], err["maximum"]) == (200_000, TEST_LIMITS["max_image_side"])
    refused(chat(client, DESCRIBE, image=b64(png_bytes(100, 2500))), 413, "limit_exceeded", "max_image_side")
    err = refused(
        chat(client, DESCRIBE, image=b64(png_bytes(100, 450))),
        413,
        "limit_exceeded",
        "max_image_aspect_ratio",
    )
    assert err["value"] == 4.5
    # The same shapes turned the other way, and a tall but allowed person crop.
    refused(
        chat(client, DESCRIBE, image=b64(png_bytes(450, 100))),
        413,
        "limit_exceeded",
        "max_image_aspect_ratio",
    )
    assert chat(client, DESCRIBE, image=b64(png_bytes(100, 400))).status_code == 200
    assert model_replica(served) == replica


def _encoded(fmt: str, size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (20, 120, 40)).save(buf, format=fmt)
    return buf.getvalue()


def test_only_png_jpeg_and_webp_are_accepted(client: httpx.Client) -> None:
    for fmt, mime in (("TIFF", "image/tiff"), ("BMP", "image/bmp"), ("ICO", "image/x-icon")):
        raw = _encoded(fmt)
        refused(chat(client, DESCRIBE, image=data_url(raw, mime)), 422, "invalid_image")
        # Without a declared type, the header says what it is.
        assert fmt in refused(chat(client, DESCRIBE, image=b64(raw)), 422, "invalid_image")["message"]
    # A declared type must be the real one.
    refused(chat(client, DESCRIBE, image=data_url(_encoded("JPEG"), "image/png")), 422, "invalid_image")
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        assert chat(client, DESCRIBE, image=data_url(_encoded(fmt), mime)).status_code == 200, fmt


def test_a_corrupt_image_is_a_4xx_that_keeps_the_decoder_words_in_the_log(client: httpx.Client) -> None:
    noisy = png_bytes(64, 64, noise=True)
    response = chat(client, DESCRIBE, image=b64(noisy[: len(noisy) // 2]))
    err = refused(response, 422, "invalid_image")
    assert err["message"] == "image: the image does not decode (truncated or corrupt)"
    rid = response.json()["request_id"]
    (line,) = serve_log_lines(f"request {rid} refused (invalid_image)")
    assert "cannot decode image" in line  # the decoder's complaint, for the operator only


# -- decoding options and text -----------------------------------------------------------------


def test_seeds_outside_64_bits_are_refused(client: httpx.Client) -> None:
    for seed in (2**64, 10**30, -(2**63) - 1, -1):
        err = refused(chat(client, STANDING, seed=seed, temperature=0.7), 422, "invalid_request")
        assert "seed" in err["message"]
    assert chat(client, STANDING, seed=2**63 - 1, temperature=0.7).status_code == 200


def test_tiny_temperatures_decode_greedily(client: httpx.Client) -> None:
    for temperature in (1e-300, 1e-40, 1e-5):
        response = chat(client, STANDING, temperature=temperature, seed=3)
        assert response.status_code == 200, response.text
        assert response.json()["text"] == ANSWERS[STANDING]


# -- headers, bodies, connections --------------------------------------------------------------


def test_responses_carry_nosniff(client: httpx.Client) -> None:
    data = chat(client, STANDING).json()
    (pose,) = data["poses"]
    for url in (pose["mesh"]["obj_url"], pose["mesh"]["png_url"], "/v1/poses/none/mesh.obj", "/v1/body"):
        assert client.get(url).headers["x-content-type-options"] == "nosniff", url


def test_a_million_item_list_is_refused_at_the_schema_cap(served: Served, client: httpx.Client) -> None:
    """The schema caps lists (1024 items), so validation stops at once instead of listing 100k errors."""
    body = '{"messages": [' + ",".join(["1"] * 140_000) + "]}"
    assert len(body) < TEST_LIMITS["max_body_bytes"]
    t0 = time.monotonic()
    err = refused(
        client.post("/v1/chat", content=body, headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
    assert "at most 1024 items" in err["message"], err
    assert time.monotonic() - t0 < 30
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


def _raw_request(served: Served, headers: dict[str, str], body: bytes = b"") -> socket.socket:
    host, port = httpx.URL(served.url).host, httpx.URL(served.url).port
    sock = socket.create_connection((host, port), timeout=30)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"POST /v1/chat HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode() + body)
    return sock


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], float]:
    """(status, headers, seconds until the status line came) of the response on ``sock``."""
    sock.settimeout(timeout)
    t0 = time.monotonic()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    waited = time.monotonic() - t0
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1]) if head and head[0].startswith("HTTP/") else 0
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:])}
    return status, fields, waited


def test_an_oversized_or_unauthorised_body_is_refused_before_it_is_sent(served: Served) -> None:
    json_type = {"Content-Type": "application/json", "Content-Length": "50000000"}
    for headers, status in (
        ({**json_type, "Authorization": f"Bearer {served.key}"}, 413),
        (json_type, 401),
    ):
        sock = _raw_request(served, headers)  # headers only: not one byte of the 50 MB body
        try:
            got, fields, waited = _read_response(sock, timeout=20)
            assert got == status and fields.get("connection") == "close", (got, fields)
            assert waited < 20
        finally:
            sock.close()


def test_slow_senders_are_cut_off_while_others_are_served(served: Served, client: httpx.Client) -> None:
    """More slow senders than ``limits.max_slow_bodies``: each gets 408 or 503, ordinary requests 200."""
    slow = 3 * TEST_LIMITS["max_slow_bodies"]
    headers = {
        "Authorization": f"Bearer {served.key}",
        "Content-Type": "application/json",
        "Content-Length": "2000",
    }
    socks = [_raw_request(served, headers, b'{"messages": [') for _ in range(slow)]
    try:
        t0 = time.monotonic()
        for _ in range(3):
            response = chat(client, STANDING)
            assert response.status_code == 200 and response.json()["text"] == ANSWERS[STANDING]
        statuses = [_read_response(s, timeout=60)[0] for s in socks]
        elapsed = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    assert set(statuses) <= {408, 503}, statuses
    # Only the first max_slow_bodies wait for the body timeout; the rest are turned away at once.
    assert statuses.count(408) <= TEST_LIMITS["max_slow_bodies"] < statuses.count(503), statuses
    assert elapsed < TEST_LIMITS["body_timeout_s"] + 40


# -- sign-in -----------------------------------------------------------------------------------


def test_sign_in_gives_a_cookie_that_works_for_json_only_and_never_redirects_away(served: Served) -> None:
    url = f"{served.url}/login"
    form = {"content-type": "application/x-www-form-urlencoded"}
    too_many = "&".join(f"f{k}=1" for k in range(8))
    assert httpx.post(url, content=too_many, headers=form, timeout=30).status_code == 401
    wrong = httpx.post(url, data={"key": "nope", "next": "/"}, timeout=30)
    assert wrong.status_code == 401 and "Wrong key." in wrong.text and "set-cookie" not in wrong.headers
    right = httpx.post(url, data={"key": served.key, "next": "https://evil.example/"}, timeout=30)
    assert right.status_code == 303 and right.headers["location"] == "/"  # only this service's pages
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and served.key not in cookie
    session = {"cookie": cookie.split(";")[0]}
    assert httpx.get(f"{served.url}/v1/body", headers=session, timeout=60).status_code == 200
    as_form = httpx.post(f"{served.url}/v1/chat", data={"messages": "x"}, headers=session, timeout=30)
    assert as_form.status_code == 401
    as_json = httpx.post(
        f"{served.url}/v1/chat",
        json={"messages": [{"role": "user", "content": STANDING}]},
        headers=session,
        timeout=120,
    )
    assert as_json.status_code == 200 and as_json.json()["text"] == ANSWERS[STANDING]
    forged = {"cookie": f"posegpt_session=9999999999.{'0' * 64}"}
    assert httpx.get(f"{served.url}/v1/body", headers=forged, timeout=30).status_code == 401
