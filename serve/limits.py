"""Request checks of the ingress: sizes, counts and inline images, each failure naming its limit.

Images arrive only inline, as base64 (optionally a ``data:image/...;base64,`` URL,
which is what a browser's ``FileReader`` produces). Anything that looks like a
URL to fetch is refused: the service never downloads. The pixel count is read
from the image header before any pixel is decoded, so a small file that
expands to gigabytes (a decompression bomb) is refused cheaply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posegpt.data import crops
from serve.errors import CLOSE, asgi_error
from serve.settings import LimitsConfig

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class RequestRejected(Exception):
    """A request the service refuses: HTTP status, a machine-readable code and a message.

    ``limit`` names the configured limit that was exceeded (``limits.<name>``), with the
    offending ``value`` and the ``maximum`` allowed.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        limit: str | None = None,
        value: float | None = None,
        maximum: float | None = None,
        headers: dict[str, str] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.detail = detail
        """What went wrong inside (a decoder's complaint): logged with the request id, never sent."""
        self.status = status
        self.code = code
        self.message = message
        self.limit = limit
        self.value = value
        self.maximum = maximum

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.limit is not None:
            out.update(limit=self.limit, value=self.value, maximum=self.maximum)
        return out


def over_limit(name: str, value: int, maximum: int, what: str, status: int = 422) -> RequestRejected:
    return RequestRejected(
        status,
        "limit_exceeded",
        f"{what} is {value}, over the limit limits.{name} = {maximum}",
        limit=f"limits.{name}",
        value=value,
        maximum=maximum,
    )


def check_at_most(name: str, value: int, limits: LimitsConfig, what: str, status: int = 422) -> None:
    maximum = int(getattr(limits, name))
    if value > maximum:
        raise over_limit(name, value, maximum, what, status)


def check_texts(texts: Sequence[str], limits: LimitsConfig, where: str) -> None:
    for i, text in enumerate(texts):
        check_at_most("max_message_chars", len(text), limits, f"the length of {where}[{i}] in characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # JSON's \ud800 escapes decode to lone surrogates, which no tokenizer takes.
            raise RequestRejected(
                422,
                "invalid_request",
                f"{where}[{i}]: not valid Unicode (a lone surrogate at character {exc.start})",
            ) from exc


ALLOWED_IMAGE_TYPES: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
"""The image types the service takes (data-URL MIME type → PIL format); others (TIFF, BMP, ICO, GIF,
HEIF...) are refused before decoding: fewer decoders exposed to untrusted bytes."""
_MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


def decode_inline_image(data: str, limits: LimitsConfig, where: str) -> bytes:
    """Encoded image bytes from base64 text, after the size, type and shape checks on its header.

    Raises ``RequestRejected``: 413 over ``max_image_bytes``, ``max_image_pixels``,
    ``max_image_side`` or ``max_image_aspect_ratio``; 422 for a URL, bad base64, a type
    outside ``ALLOWED_IMAGE_TYPES`` or bytes that are not an image.
    """
    text = data.strip()
    declared: str | None = None
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestRejected(
                422, "invalid_image", f"{where}: a data URL must be base64 (data:image/...;base64,...)"
            )
        mime = header[len("data:") : -len(";base64")].split(";")[0].strip().lower()
        declared = _MIME_ALIASES.get(mime, mime)
        if declared not in ALLOWED_IMAGE_TYPES:
            raise RequestRejected(
                422, "invalid_image", f"{where}: images of type {mime[:40]!r} are not accepted; {_allowed()}"
            )
    elif _SCHEME.match(text):
        raise RequestRejected(
            422,
            "image_url_not_allowed",
            f"{where}: images are sent inline as base64; the service never fetches URLs",
        )
    else:
        payload = text
    payload = "".join(payload.split())
    # Base64 holds 3 bytes per 4 characters: refuse before decoding anything.
    estimate = len(payload) * 3 // 4 - payload[-2:].count("=")
    check_at_most("max_image_bytes", estimate, limits, f"{where}: the decoded image size in bytes", 413)
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestRejected(422, "invalid_image", f"{where}: not valid base64") from exc
    if not raw:
        raise RequestRejected(422, "invalid_image", f"{where}: the image is empty")
    info = image_header(raw, where, limits)
    if info.format not in ALLOWED_IMAGE_TYPES.values():
        raise RequestRejected(
            422, "invalid_image", f"{where}: a {info.format} image is not accepted; {_allowed()}"
        )
    if declared is not None and ALLOWED_IMAGE_TYPES[declared] != info.format:
        raise RequestRejected(
            422, "invalid_image", f"{where}: the data URL says {declared} but the image is {info.format}"
        )
    return raw


def _allowed() -> str:
    return "send " + ", ".join(ALLOWED_IMAGE_TYPES) + " (or base64 of such a file)"


_SERVE_LIMIT = {
    "max_bytes": ("max_image_bytes", "the image size in bytes"),
    "max_pixels": ("max_image_pixels", "the pixel count"),
    "max_side": ("max_image_side", "the long side in pixels"),
    "max_aspect_ratio": ("max_image_aspect_ratio", "the aspect ratio"),
}


def image_header(raw: bytes, where: str, limits: LimitsConfig) -> crops.ImageInfo:
    """Format and size from the image header alone (``posegpt.data.crops.image_info``), checked against
    ``limits``; no pixel is decoded. Refusals name the service's limit; decoder internals go to
    ``detail`` (logged, not sent).
    """
    try:
        return crops.image_info(raw, limits.image_limits(), where)
    except crops.ImageLimitError as exc:
        name, what = _SERVE_LIMIT[exc.limit]
        value = exc.value if isinstance(exc.value, int) else round(float(exc.value), 2)
        maximum = getattr(limits, name)
        raise RequestRejected(
            413,
            "limit_exceeded",
            f"{where}: {what} of the {exc.width}x{exc.height} image is {value}, over the limit "
            f"limits.{name} = {maximum}"
            if exc.width
            else f"{where}: {what} is {value}, over the limit limits.{name} = {maximum}",
            limit=f"limits.{name}",
            value=value,
            maximum=maximum,
        ) from exc
    except ValueError as exc:
        if isinstance(exc.__cause__, Image.DecompressionBombError | Image.DecompressionBombWarning):
            # PIL refuses headers past its own bomb threshold (~89 million pixels) before giving a size.
            raise RequestRejected(
                413,
                "limit_exceeded",
                f"{where}: the image header declares too many pixels; limits.max_image_pixels = "
                f"{limits.max_image_pixels}",
                limit="limits.max_image_pixels",
                maximum=limits.max_image_pixels,
                detail=str(exc),
            ) from exc
        raise RequestRejected(
            422, "invalid_image", f"{where}: not a readable image; {_allowed()}", detail=str(exc)
        ) from exc


def verify_image(raw: bytes, limits: LimitsConfig, where: str) -> None:
    """Decode ``raw`` once, within ``limits``, so that an image that only fails while decoding is
    refused here (422) and never reaches a model batch. CPU work: call it in a worker thread."""
    try:
        crops.decode_pil(raw, limits.image_limits(), where)
    except ValueError as exc:
        raise RequestRejected(
            422,
            "invalid_image",
            f"{where}: the image does not decode (truncated or corrupt)",
            detail=str(exc),
        ) from exc


OVER_CAP_GRACE_S = 1.0
"""With ``max_slow_bodies`` bodies already in flight, the time a new body gets to arrive whole."""


class BodyGuardMiddleware:
    """Limits on reading request bodies, before any route parses one.

    * 413 at once when ``Content-Length`` exceeds ``max_bytes``; otherwise counted while read
      (chunked uploads carry no length up front).
    * 408 when the whole body has not arrived within ``timeout_s``.
    * At most ``max_in_flight`` bodies are received at once; past it, a body must arrive within
      ``OVER_CAP_GRACE_S`` or gets 503: a flood of slow senders holds a bounded number of
      ingress slots, while ordinary requests, whose bodies come in one piece, pass.

    Every refusal carries ``Connection: close``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, max_in_flight: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def _rejection(self, size: int) -> RequestRejected:
        return over_limit("max_body_bytes", size, self.max_bytes, "the request body size in bytes", 413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                rejected = self._rejection(int(value))
                await asgi_error(
                    scope,
                    receive,
                    send,
                    rejected.status,
                    rejected.code,
                    rejected.message,
                    extra_headers=CLOSE,
                    **_fields(rejected),
                )
                return
        loop = asyncio.get_running_loop()
        received = 0
        counted = False
        finished = False
        deadline = 0.0
        over_cap = False

        def stop_counting() -> None:
            nonlocal counted
            if counted:
                self.in_flight -= 1
                counted = False

        async def guarded_receive() -> Message:
            nonlocal received, counted, finished, deadline, over_cap
            if finished:
                return await receive()
            if not counted and deadline == 0.0:
                over_cap = self.in_flight >= self.max_in_flight
                deadline = loop.time() + (OVER_CAP_GRACE_S if over_cap else self.timeout_s)
                self.in_flight += 1
                counted = True
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                stop_counting()
                if over_cap:
                    raise HTTPException(
                        503,
                        detail={
                            "code": "overloaded",
                            "message": f"{self.max_in_flight} request bodies are being received already "
                            "(limits.max_slow_bodies); send the body at once or retry",
                        },
                        headers={**CLOSE, "Retry-After": "1"},
                    ) from None
                raise HTTPException(
                    408,
                    detail={
                        "code": "timeout",
                        "message": f"the request body did not arrive within limits.body_timeout_s = "
                        f"{self.timeout_s:g} s",
                    },
                    headers=CLOSE,
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    stop_counting()
                    # FastAPI passes HTTPExceptions raised while reading the body through to its handlers.
                    raise HTTPException(413, detail=self._rejection(received).to_dict(), headers=CLOSE)
                if not message.get("more_body", False):
                    finished = True
                    stop_counting()
            else:
                finished = True
                stop_counting()
            return message

        try:
            await self.app(scope, guarded_receive, send)
        finally:
            stop_counting()


def _fields(rejected: RequestRejected) -> dict[str, Any]:
    return {"limit": rejected.limit, "value": rejected.value, "maximum": rejected.maximum}


__all__ = [
    "ALLOWED_IMAGE_TYPES",
    "BodyGuardMiddleware",
    "RequestRejected",
    "check_at_most",
    "check_texts",
    "decode_inline_image",
    "image_header",
    "over_limit",
    "verify_image",
]
