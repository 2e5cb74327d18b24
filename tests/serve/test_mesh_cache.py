"""The bounded cache of recent bodies."""

from __future__ import annotations

import numpy as np
import pytest

from serve.mesh_cache import MeshCache


def body(i: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(72, i, np.float32), np.full((5, 3), i, np.float32)


def test_least_recently_used_body_goes_first() -> None:
    cache = MeshCache(3)
    ids = [cache.add(*body(i)) for i in range(3)]
    assert len(set(ids)) == 3 and all(len(i) >= 16 for i in ids)
    assert cache.get(ids[0]) is not None  # touch: ids[1] is now the oldest
    new = cache.add(*body(3))
    assert len(cache) == 3
    assert ids[1] not in cache and ids[0] in cache and ids[2] in cache and new in cache
    got = cache.get(new)
    assert got is not None and float(got.pose[0]) == 3.0 and got.vertices.shape == (5, 3)
    assert cache.get("unknown") is None


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        MeshCache(0)
