"""Request checks of the ingress: sizes, counts and inline images, each failure naming its limit.

Images arrive only inline, as base64 (optionally a ``data:image/...;base64,`` URL,
which is what a browser's ``FileReader`` produces). Anything that looks like a
URL to fetch is refused: the service never downloads. The pixel count is read
from the image header before any pixel is decoded, so a small file that
expands to gigabytes (a decompression bomb) is refused cheaply.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Sequence
from typing import Any

from PIL import Image
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posegpt import crops
from serve.errors import asgi_error
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
        value: int | None = None,
        maximum: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
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


def decode_inline_image(data: str, limits: LimitsConfig, where: str) -> bytes:
    """Encoded image bytes from base64 text, after the size and pixel-count checks.

    Raises ``RequestRejected``: 413 over ``max_image_bytes`` or ``max_image_pixels``,
    422 for a URL, bad base64 or bytes that are not an image.
    """
    text = data.strip()
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestRejected(
                422, "invalid_image", f"{where}: a data URL must be base64 (data:image/...;base64,...)"
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
        raise RequestRejected(422, "invalid_image", f"{where}: not valid base64 ({exc})") from exc
    if not raw:
        raise RequestRejected(422, "invalid_image", f"{where}: the image is empty")
    width, height = image_size(raw, where, limits.max_image_pixels)
    check_at_most(
        "max_image_pixels",
        width * height,
        limits,
        f"{where}: the pixel count of the {width}x{height} image",
        413,
    )
    return raw


def image_size(raw: bytes, where: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the image header alone (``posegpt.crops.image_size``); no pixel is decoded.

    PIL refuses headers past its own bomb threshold (~89 million pixels) before
    reporting a size; that refusal is reported against ``max_pixels`` too.
    """
    try:
        # Only the header read here: the byte and pixel limits are checked by the caller, by name.
        return crops.image_size(raw, crops.ImageLimits(max_bytes=len(raw), max_pixels=sys.maxsize), where)
    except ValueError as exc:
        if isinstance(exc.__cause__, Image.DecompressionBombError | Image.DecompressionBombWarning):
            raise RequestRejected(
                413,
                "limit_exceeded",
                f"{where}: the image header declares too many pixels ({exc.__cause__}); "
                f"limits.max_image_pixels = {max_pixels}",
                limit="limits.max_image_pixels",
                maximum=max_pixels,
            ) from exc
        raise RequestRejected(422, "invalid_image", str(exc)) from exc


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``: from ``Content-Length`` at once, else counted while read.

    Counting matters for chunked uploads, which carry no length up front.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
                    **_fields(rejected),
                )
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes HTTPExceptions raised while reading the body through to its handlers.
                    raise HTTPException(413, detail=self._rejection(received).to_dict())
            return message

        await self.app(scope, counted_receive, send)


def _fields(rejected: RequestRejected) -> dict[str, Any]:
    return {"limit": rejected.limit, "value": rejected.value, "maximum": rejected.maximum}


__all__ = [
    "BodySizeLimitMiddleware",
    "RequestRejected",
    "check_at_most",
    "check_texts",
    "decode_inline_image",
    "image_size",
    "over_limit",
]
