"""The store of answered poses: ids per API key, bounded size, expiry."""

from __future__ import annotations

import numpy as np
import pytest

from serve.pose_store import PoseStore, owner_of
from serve.settings import PoseStoreConfig


class Clock:
    """A clock the test moves by hand (the store reads time only through it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pose(seed: int) -> list[float]:
    return (np.random.default_rng(seed).normal(size=72) * 0.3).astype(np.float32).tolist()


def test_a_pose_comes_back_only_for_its_owner() -> None:
    store = PoseStore(capacity=10, ttl_s=60)
    alice, bob = owner_of("key-a"), owner_of("key-b")
    store.put(alice, [("p1", pose(1)), ("p2", pose(2))])
    got = store.get(alice, ["p2", "p1", "nope"])
    np.testing.assert_array_equal(got[0], np.float32(pose(2)))
    np.testing.assert_array_equal(got[1], np.float32(pose(1)))
    assert got[2] is None
    # Another key's id answers exactly as an unknown one.
    assert store.get(bob, ["p1"]) == store.get(bob, ["nope"]) == [None]
    assert store.get(owner_of(None), ["p1"]) == [None]
    # The owner tag never holds the key.
    assert "key-a" not in alice and alice != bob and owner_of(None) == "open"


def test_poses_expire_after_ttl_and_the_oldest_go_past_capacity() -> None:
    clock = Clock()
    store = PoseStore(capacity=3, ttl_s=60, clock=clock)
    owner = owner_of("k")
    store.put(owner, [("a", pose(1))])
    clock.now += 30
    store.put(owner, [("b", pose(2))])
    clock.now += 31  # a is 61 s old, b 31 s
    assert store.get(owner, ["a"]) == [None]
    assert store.get(owner, ["b"])[0] is not None
    store.put(owner, [("c", pose(3)), ("d", pose(4)), ("e", pose(5))])
    assert len(store) == 3
    assert store.get(owner, ["b"]) == [None]  # stored first: evicted first
    assert all(p is not None for p in store.get(owner, ["c", "d", "e"]))


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PoseStore(capacity=0, ttl_s=1)
    store = PoseStore(capacity=2, ttl_s=1)
    with pytest.raises(ValueError, match="'x' has shape"):
        store.put("o", [("x", [0.0] * 71)])
    with pytest.raises(Exception, match=r"pose_store\.capacity"):
        PoseStoreConfig(capacity=0).validate()
