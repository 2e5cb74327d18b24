"""JSON error responses: ``{"error": {"code", "message", ...}, "request_id"}``.

The request id is the one Serve's proxy puts in the ``x-request-id`` header (and
returns as ``X-Request-ID``), so an error body, the response header and the
replica logs all carry the same id.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
CLOSE = {"Connection": "close"}
"""Sent with refusals made before a request's body is read: the HTTP server then closes the
connection instead of reading (and discarding) the rest of an unwanted body."""


def request_id_from_scope(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key.decode("latin-1").lower() == REQUEST_ID_HEADER:
            return value.decode("latin-1")
    # Outside Serve's proxy (e.g. a bare ASGI server) there is no id yet: make one.
    return uuid.uuid4().hex


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> JSONResponse:
    # A message may quote the request (a field name); a lone surrogate there would fail the JSON encoding.
    error: dict[str, Any] = {"code": code, "message": message.encode("utf-8", "backslashreplace").decode()}
    error.update({k: v for k, v in fields.items() if v is not None})
    return JSONResponse({"error": error, "request_id": request_id}, status_code=status, headers=headers)


async def asgi_error(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    extra_headers: dict[str, str] | None = None,
    **fields: Any,
) -> None:
    """Send a JSON error from ASGI middleware (before any route runs)."""
    response = error_response(
        status, code, message, request_id_from_scope(scope), headers=extra_headers, **fields
    )
    await response(scope, receive, send)


__all__ = ["CLOSE", "REQUEST_ID_HEADER", "asgi_error", "error_response", "request_id_from_scope"]
