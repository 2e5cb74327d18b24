"""Bit-reproducible torch arithmetic for the world's files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread (restored afterwards) and without autograd.

    float32 sums split over threads come out in a different order, so the last bits
    of vertices and joints would depend on the caller's thread count and on how many
    render workers there are; the world's bytes must not.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
