"""Bounded cache of recent bodies, behind ``/v1/poses/{id}/mesh.obj`` and ``.png``.

Each answer's poses are stored with their vertices under a random id; the OBJ
text and the PNG are made on the first request for them and kept with the body.
The least recently used body goes when the cache is full, so memory stays
bounded (about 85 KB of vertices per body, plus its files once asked for).
The cache belongs to one ingress replica: with several ingress replicas a mesh
URL is answered by the replica that made it or by none (404).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass
class CachedBody:
    pose: np.ndarray
    """(72,) axis-angle pose."""
    vertices: np.ndarray
    """(V, 3) float32 mesh vertices."""
    obj: str | None = None
    png: bytes | None = None


class MeshCache:
    """Least-recently-used map from body id to ``CachedBody``, holding at most ``capacity`` bodies."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mesh cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, CachedBody] = OrderedDict()

    def add(self, pose: np.ndarray, vertices: np.ndarray) -> str:
        """Store a body; returns its new id (URL-safe, unguessable)."""
        body_id = secrets.token_urlsafe(12)
        self._items[body_id] = CachedBody(np.asarray(pose, np.float32), np.asarray(vertices, np.float32))
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return body_id

    def get(self, body_id: str) -> CachedBody | None:
        body = self._items.get(body_id)
        if body is not None:
            self._items.move_to_end(body_id)
        return body

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, body_id: object) -> bool:
        return body_id in self._items


__all__ = ["CachedBody", "MeshCache"]
