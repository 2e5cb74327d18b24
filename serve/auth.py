"""Optional API key: ``Authorization: Bearer <key>`` on every path but ``/healthz``.

The key never sits in a config file: the config names an environment variable
(set on the replicas, e.g. from a Kubernetes secret) or a file holding the key
(e.g. a mounted secret). Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from serve.errors import asgi_error
from serve.settings import ServeConfig

OPEN_PATHS = frozenset({"/healthz"})
"""Paths answered without the key (load balancer and Kubernetes probes)."""


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


def route_path(scope: Scope) -> str:
    """The path inside the application (Serve's route prefix, the ASGI root path, removed)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class BearerKeyMiddleware:
    """Refuses requests without the right key with 401 and a JSON error."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if key_matches(headers.get("authorization"), self.key):
            await self.app(scope, receive, send)
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
            extra_headers={"WWW-Authenticate": "Bearer"},
        )


__all__ = ["OPEN_PATHS", "BearerKeyMiddleware", "key_matches", "load_api_key", "route_path"]
