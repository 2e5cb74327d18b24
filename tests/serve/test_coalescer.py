"""The coalescer behind ``@serve.batch``: one decode at a time, merging what arrives meanwhile."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serve.model import Coalescer


class Decoder:
    """Doubles its items; each call blocks until released, so tests control what queues up."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.started.set()
        assert self.release.wait(10)
        if -1 in items:
            raise RuntimeError("bad item")
        return [2 * i for i in items]


async def _wait(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.01)


def test_batches_submitted_during_a_decode_are_merged_up_to_the_limit() -> None:
    async def run() -> tuple[list, Decoder]:
        decoder = Decoder()
        coalescer = Coalescer(decoder, lambda: 5)
        first = asyncio.create_task(coalescer.submit([1]))
        await _wait(decoder.started)  # [1] is decoding; the next ones queue up
        rest = [asyncio.create_task(coalescer.submit(items)) for items in ([2, 3], [4], [5, 6], [7])]
        await asyncio.sleep(0.05)
        decoder.release.set()
        return await asyncio.gather(first, *rest), decoder

    results, decoder = asyncio.run(run())
    assert results == [[2], [4, 6], [8], [10, 12], [14]]
    # Whole submissions in arrival order, at most 5 items per decode.
    assert decoder.calls == [[1], [2, 3, 4, 5, 6], [7]]


def test_a_failing_decode_fails_its_group_only() -> None:
    async def run() -> tuple[list, Decoder]:
        decoder = Decoder()
        coalescer = Coalescer(decoder, lambda: 2)
        first = asyncio.create_task(coalescer.submit([1]))
        await _wait(decoder.started)
        bad = asyncio.create_task(coalescer.submit([-1]))
        good = asyncio.create_task(coalescer.submit([3, 4]))  # does not fit with [-1]: decoded alone
        await asyncio.sleep(0.05)
        decoder.release.set()
        return await asyncio.gather(first, bad, good, return_exceptions=True), decoder

    (first, bad, good), decoder = asyncio.run(run())
    assert first == [2] and good == [6, 8]
    assert isinstance(bad, RuntimeError)
    assert decoder.calls == [[1], [-1], [3, 4]]


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    async def run() -> list:
        decoder = Decoder()
        coalescer = Coalescer(decoder, lambda: 4)
        first = asyncio.create_task(coalescer.submit([1]))
        await _wait(decoder.started)
        gone = asyncio.create_task(coalescer.submit([2]))
        kept = asyncio.create_task(coalescer.submit([3]))
        await asyncio.sleep(0.05)
        gone.cancel()
        decoder.release.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await asyncio.gather(first, kept)

    assert asyncio.run(run()) == [[2], [6]]
