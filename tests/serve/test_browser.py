"""The web page in a real headless Chromium (Debian's package, driven by Playwright; no browser download).

The service has an API key: the browser opens the page, is sent to the sign-in form, enters
the key, and comes back to the page with a session cookie (it never sends an Authorization
header). It then sends a message, waits for the body (server PNG and canvas viewer), takes a
screenshot, checks that the canvas shows a body, that dragging turns it, that ``/docs`` and
the schema open with the same cookie, and that the page fetched nothing from outside the service.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.model import POSING_SAMPLES
from tests.fixtures.serving import API_KEY, EDIT_KEY, Served

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (make browser installs it)"
    ),
]

STANDING = POSING_SAMPLES[0]["prompt"]

CANVAS_PIXELS = """([canvas, bg]) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let body = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - bg[0]) + Math.abs(data[i + 1] - bg[1]) + Math.abs(data[i + 2] - bg[2]) > 12) body++;
  }
  return {body, total: data.length / 4, url: canvas.toDataURL()};
}"""


def body_fraction(png: bytes, background: tuple[int, int, int]) -> float:
    """Share of pixels of a screenshot that differ from the viewer's background."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((np.abs(image - np.array(background)).sum(axis=2) > 12).mean())


def test_page_chats_and_shows_the_body(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(served.url + "/", wait_until="load")
            assert page.url == f"{served.url}/login?next=/"
            page.fill("#key", "not the key")
            page.click("#sign-in")
            page.wait_for_load_state("load")
            assert page.inner_text("#status") == "Wrong key." and not context.cookies()
            page.fill("#key", API_KEY)
            page.click("#sign-in")
            page.wait_for_selector("#message", timeout=30_000)
            assert page.url == f"{served.url}/"
            (session,) = context.cookies()
            assert session["httpOnly"] and session["sameSite"] == "Strict" and API_KEY not in session["value"]
            page.fill("#message", STANDING)
            page.click("#send")
            page.wait_for_selector(".msg.assistant", timeout=60_000)
            assert "[pose 1]" in page.inner_text(".msg.assistant")
            canvas = page.wait_for_selector("canvas.body-viewer[data-drawn]", timeout=60_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('img.body-png'); return i && i.complete && i.naturalWidth > 0; }",
                timeout=30_000,
            )
            link = page.get_attribute(".pose a", "href")
            assert link and link.endswith("/mesh.obj")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            canvas_shot = canvas.screenshot()
            hex_bg = page.evaluate("window.BodyViewer.BACKGROUND")
            background = tuple(int(hex_bg[i : i + 2], 16) for i in (1, 3, 5))

            before = page.evaluate(CANVAS_PIXELS, [canvas, background])
            box = canvas.bounding_box()
            assert box is not None
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 80, y, steps=8)
            page.mouse.up()
            page.wait_for_function(
                "(n) => Number(document.querySelector('canvas.body-viewer').dataset.drawn) > n",
                arg=1,
                timeout=10_000,
            )
            after = page.evaluate(CANVAS_PIXELS, [canvas, background])
            assert not errors, errors
            # The API's own pages open with the same cookie (fetched without running their CDN script).
            docs = context.request.get(f"{served.url}/docs")
            assert docs.status == 200 and "openapi.json" in docs.text()
            assert context.request.get(f"{served.url}/openapi.json").json()["info"]["title"] == "PoseGPT"
            # A cookie alone never authorises a form post (cross-site forms cannot send JSON).
            form = context.request.post(f"{served.url}/v1/chat", form={"messages": "x"})
            assert form.status == 401
        finally:
            browser.close()

    # The canvas shows a body (neither empty nor filled), before and after turning it; turning changes it.
    for state in (before, after):
        assert 0.03 < state["body"] / state["total"] < 0.7, state["body"]
    assert hashlib.sha1(before["url"].encode()).digest() != hashlib.sha1(after["url"].encode()).digest()
    # The screenshot of the canvas shows it too.
    assert 0.03 < body_fraction(canvas_shot, background) < 0.7
    # Everything came from the service itself.
    assert requested and all(url.startswith(served.url) for url in requested), requested


def test_page_edits_an_answered_pose_and_shows_before_and_after(pose_input_served: Served) -> None:
    """Click "Edit this pose" on an answer, type the edit, send: the answer shows both bodies."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 1400})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            sent: list[dict] = []
            page.on(
                "request",
                lambda r: sent.append(r.post_data_json) if r.url.endswith("/v1/chat") else None,
            )
            page.goto(pose_input_served.url + "/", wait_until="load")
            page.fill("#key", EDIT_KEY)
            page.click("#sign-in")
            page.wait_for_selector("#message", timeout=30_000)
            page.fill("#message", STANDING)
            page.click("#send")
            answer = page.wait_for_selector(".msg.assistant, .msg.error", timeout=120_000)
            assert page.query_selector(".pose button.edit-pose"), (
                f"no pose to edit in: {answer.inner_text()!r}"
            )
            assert page.is_hidden("#editing")
            page.click(".pose button.edit-pose")
            assert page.is_visible("#editing") and "pose 1" in page.inner_text("#editing-label")
            assert page.get_attribute(".pose.selected", "data-pose-id")
            page.fill("#message", "Raise the left arm.")
            page.click("#send")
            before = page.wait_for_selector(
                ".pose.compare .before canvas.body-viewer[data-drawn]", timeout=60_000
            )
            after = page.wait_for_selector(
                ".pose.compare .after canvas.body-viewer[data-drawn]", timeout=60_000
            )
            assert page.is_hidden("#editing")  # the edit was sent; the next message is a plain one
            hex_bg = page.evaluate("window.BodyViewer.BACKGROUND")
            background = tuple(int(hex_bg[i : i + 2], 16) for i in (1, 3, 5))
            shown = [page.evaluate(CANVAS_PIXELS, [c, background]) for c in (before, after)]
            assert not errors, errors
        finally:
            browser.close()

    first_pose_id = sent[1]["messages"][2]["poses"][0]
    # The edit went by the answered pose's id, after the first exchange.
    assert [m["role"] for m in sent[1]["messages"]] == ["user", "assistant", "user"]
    assert isinstance(first_pose_id, str) and "poses" not in sent[0]["messages"][0]
    for state in shown:
        assert 0.03 < state["body"] / state["total"] < 0.7, state["body"]
    # Before and after are different bodies.
    assert shown[0]["url"] != shown[1]["url"]
