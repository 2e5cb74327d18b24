"""Poses the service answered, by id, so a later request can send a pose back by its id.

Every pose in an answer gets an id (the same id as its mesh URLs). The ingress stores the
pose under that id in ``PoseStore``, a small named Ray actor shared by every ingress replica
of the application, so an id works whichever replica takes the next request (ingress
replicas may scale out, die and be replaced; the actor outlives them as a detached actor,
one per application name).

Entries are kept per *owner*: a digest of the API key the request came with (or ``open``
when the service has no key). A lookup under another owner answers exactly as an unknown id,
so ids never reveal that another key's pose exists. The store holds at most
``pose_store.capacity`` poses (least recently stored first out) for at most
``pose_store.ttl_s`` seconds each; an entry is 72 float32 (288 bytes) plus its id, owner
and expiry, about 0.6 KB with Python's overhead, so the default 100,000 entries stay
under 64 MB.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from posegpt.body.skeleton import POSE_DIM

ACTOR_PREFIX = "posegpt-pose-store"
"""Name of the store actor: ``<prefix>:<application name>``."""


def owner_of(api_key: str | None) -> str:
    """The owner tag of requests made with ``api_key`` (None: an open service); never the key itself."""
    if api_key is None:
        return "open"
    return hashlib.sha256(b"posegpt pose owner v1:" + api_key.encode()).hexdigest()[:32]


class PoseStore:
    """Bounded map from (owner, pose id) to a 72-float pose, least recently stored evicted first."""

    def __init__(self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError(f"pose store needs capacity >= 1 and ttl_s > 0, got {capacity}, {ttl_s}")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()

    def put(self, owner: str, poses: Sequence[tuple[str, Sequence[float]]]) -> None:
        """Store ``(id, pose)`` pairs for ``owner``."""
        expiry = self._clock() + self.ttl_s
        for pose_id, pose in poses:
            data = np.asarray(pose, np.float32)
            if data.shape != (POSE_DIM,):
                raise ValueError(f"pose {pose_id!r} has shape {data.shape}, expected ({POSE_DIM},)")
            self._items[pose_id] = (owner, data.tobytes(), expiry)
            self._items.move_to_end(pose_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, owner: str, pose_ids: Sequence[str]) -> list[list[float] | None]:
        """The pose of each id, or None where it is unknown, expired or another owner's."""
        now = self._clock()
        out: list[list[float] | None] = []
        for pose_id in pose_ids:
            entry = self._items.get(pose_id)
            if entry is not None and entry[2] <= now:
                del self._items[pose_id]
                entry = None
            if entry is None or entry[0] != owner:
                out.append(None)
                continue
            out.append(np.frombuffer(entry[1], np.float32).astype(float).tolist())
        return out

    def __len__(self) -> int:
        return len(self._items)


def store_actor(app_name: str, capacity: int, ttl_s: float) -> Any:
    """The application's store actor, created by the first ingress replica that asks (0 CPUs)."""
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=-1)(PoseStore)
    return actor.options(
        name=f"{ACTOR_PREFIX}:{app_name}",
        namespace="posegpt",
        lifetime="detached",
        get_if_exists=True,
    ).remote(capacity, ttl_s)


__all__ = ["ACTOR_PREFIX", "PoseStore", "owner_of", "store_actor"]
