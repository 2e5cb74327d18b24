"""Optional API key: ``Authorization: Bearer <key>`` or a login cookie on every path but
``/healthz`` and ``/login``.

The key never sits in a config file: the config names an environment variable
(set on the replicas, e.g. from a Kubernetes secret) or a file holding the key
(e.g. a mounted secret). Keys are compared in constant time.

Browsers cannot put a header on an ``<img>`` or on the ``/docs`` page's requests, so
the web page signs in through ``/login``: a form that posts the key once and gets a
session cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS) holding an
expiry time and an HMAC of it under a secret derived from the key. Nothing is stored
on the server; changing the key ends every session. A cookie-authenticated request
that changes state must carry ``Content-Type: application/json``, which a cross-site
form cannot send, so a signed-in browser cannot be made to ask questions by another
site (``SameSite=Strict`` already keeps the cookie off cross-site requests).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.errors import CLOSE, asgi_error
from serve.settings import ServeConfig

OPEN_PATHS = frozenset({"/healthz", "/login", "/static/style.css"})
"""Paths answered without the key (probes, and the sign-in form with its style sheet)."""
PAGES = frozenset({"/", "/docs", "/redoc"})
"""Pages a browser opens: without a key they lead to the sign-in form instead of a JSON 401."""
SESSION_COOKIE = "posegpt_session"
SESSION_TTL_S = 12 * 3600
"""A sign-in lasts this long."""


def load_api_key(cfg: ServeConfig, environ: Mapping[str, str]) -> str | None:
    """The configured key, or None when the service is open; errors name the missing source."""
    if cfg.api_key_env:
        key = environ.get(cfg.api_key_env, "").strip()
        if not key:
            raise ValueError(
                f"api_key_env names the environment variable {cfg.api_key_env!r}, which is not set (or empty) "
                "on this replica; set it through the deployment's runtime_env or the pod's environment"
            )
        return key
    if cfg.api_key_file:
        path = Path(cfg.api_key_file)
        if not path.is_file():
            raise ValueError(f"api_key_file {path} does not exist")
        key = path.read_text().strip()
        if not key:
            raise ValueError(f"api_key_file {path} is empty")
        return key
    return None


def key_matches(header: str | None, key: str) -> bool:
    """True when ``header`` is ``Bearer <key>``; the comparison takes the same time for any wrong key."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), key.encode())


def _session_secret(key: str) -> bytes:
    # Derived, so the cookie's MAC never uses the API key itself.
    return hmac.new(key.encode(), b"posegpt web session v1", hashlib.sha256).digest()


def session_token(key: str, now: float | None = None, ttl_s: float = SESSION_TTL_S) -> str:
    """A cookie value valid for ``ttl_s`` seconds: ``<expiry>.<hex HMAC-SHA256 of the expiry>``."""
    expiry = str(int((time.time() if now is None else now) + ttl_s))
    mac = hmac.new(_session_secret(key), expiry.encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


def session_valid(token: str | None, key: str, now: float | None = None) -> bool:
    """True for an unexpired cookie value made by ``session_token`` with ``key``."""
    if not token or token.count(".") != 1:
        return False
    expiry, mac = token.split(".")
    if not expiry.isdigit() or len(expiry) > 12:
        return False
    want = hmac.new(_session_secret(key), expiry.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac.encode(), want.encode()) and int(expiry) > (
        time.time() if now is None else now
    )


def cookie(headers: Mapping[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


def route_path(scope: Scope) -> str:
    """The path inside the application (Serve's route prefix, the ASGI root path, removed)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class BearerKeyMiddleware:
    """Refuses requests without the right key (header or login cookie): 401 with a JSON error, or
    a redirect to ``/login`` for the pages a browser opens. Marks ``scope["state"]["authorized"]``
    for the open paths, so ``/healthz`` shows details only to callers with the key.
    """

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        by_header = key_matches(headers.get("authorization"), self.key)
        by_cookie = not by_header and session_valid(cookie(headers, SESSION_COOKIE), self.key)
        if by_cookie and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            # Cross-site forms cannot send JSON: a cookie alone never authorises a form post.
            by_cookie = headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
        path = route_path(scope)
        scope.setdefault("state", {})["authorized"] = by_header or by_cookie
        if by_header or by_cookie or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if path in PAGES and scope.get("method") == "GET":
            root = str(scope.get("root_path", "")).rstrip("/")
            await RedirectResponse(f"{root}/login?next={path}", status_code=303)(scope, receive, send)
            return
        code_message = (
            "missing Authorization header: send 'Authorization: Bearer <key>'"
            if "authorization" not in headers
            else "wrong API key"
        )
        await asgi_error(
            scope,
            receive,
            send,
            401,
            "unauthorized",
            code_message,
            # The body of a refused request is not wanted: close rather than read it.
            extra_headers={"WWW-Authenticate": "Bearer", **CLOSE},
        )


__all__ = [
    "OPEN_PATHS",
    "SESSION_COOKIE",
    "BearerKeyMiddleware",
    "cookie",
    "key_matches",
    "load_api_key",
    "route_path",
    "session_token",
    "session_valid",
]
