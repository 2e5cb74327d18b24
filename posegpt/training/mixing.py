"""Per-batch task mixing: every step's batch holds each task in the configured ratio.

Each task is read from its own stream of rows (one Ray Data shard per task on a
worker). The mixer takes a fixed number of rows from each stream per batch, so the
mix is exact at every step rather than only over an epoch; a stream that runs out
starts its next epoch on its own, without restarting the others. The position of
every stream (epoch, rows taken in that epoch) is saved with checkpoints, and a
resumed stream skips the rows it had already handed out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]

TASKS: tuple[str, ...] = ("image2pose", "text2pose", "vqa", "spg", "rpe", "pose2text", "posediff", "poseedit")
"""Tasks mixed in training, in the order their rows appear inside a batch. Later tasks come after earlier ones
(``spg`` and ``rpe``, then the pose-input tasks), so that ratios naming only earlier tasks split as before
(largest-remainder ties go to the earlier task)."""


class EmptySourceError(RuntimeError):
    """A task stream delivered no row in a whole epoch."""


def split_counts(batch_size: int, ratio: Mapping[str, int]) -> dict[str, int]:
    """Rows per task in a batch of ``batch_size`` for an integer ``ratio``.

    Largest-remainder rounding: counts add up to ``batch_size`` exactly; leftover
    rows go to the tasks with the largest fractional share, ties to the earlier
    task of ``TASKS``. A task with ratio 0 gets no rows. 2:1:1 of 16 is 8/4/4.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    unknown = sorted(set(ratio) - set(TASKS))
    if unknown:
        raise ValueError(f"task ratio names unknown tasks {unknown}; tasks are {list(TASKS)}")
    # Counts for the tasks the ratio names (in TASKS order), zero weights included.
    named = tuple(t for t in TASKS if t in ratio)
    weights = {task: int(ratio[task]) for task in named}
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"task ratio weights must be >= 0, got {weights}")
    total = sum(weights.values())
    if total == 0:
        raise ValueError("task ratio gives every task weight 0: nothing to train on")
    exact = {task: batch_size * w / total for task, w in weights.items()}
    counts = {task: math.floor(share) for task, share in exact.items()}
    leftover = batch_size - sum(counts.values())
    order = sorted(named, key=lambda t: (-(exact[t] - counts[t]), TASKS.index(t)))
    for task in order[:leftover]:
        counts[task] += 1
    starved = [t for t in named if weights[t] > 0 and counts[t] == 0]
    if starved:
        raise ValueError(
            f"batch size {batch_size} is too small for ratio {weights}: tasks {starved} would get no rows"
        )
    return counts


@dataclass
class SourcePosition:
    """Where a task stream stands: the epoch it is in and rows handed out in that epoch."""

    epoch: int = 0
    position: int = 0


class CyclingSource:
    """Rows of one task that start over (a new epoch) whenever the stream ends.

    ``open_epoch`` returns a fresh iterable of rows for one epoch. ``start`` resumes:
    the first epoch opened skips ``start.position`` rows (those a previous run had
    already consumed); if the stream is shorter than that, the skip ends at the
    epoch's end and the next epoch starts from its beginning.
    """

    def __init__(
        self,
        task: str,
        open_epoch: Callable[[], Iterable[Row]],
        start: SourcePosition | None = None,
    ) -> None:
        self.task = task
        self._open = open_epoch
        start = start or SourcePosition()
        self.epoch = start.epoch
        self.position = 0
        self._rows: Iterator[Row] | None = None
        self._skip = start.position
        self._pending: list[Row] = []

    def _next_row(self) -> Row:
        while True:
            if self._rows is None:
                self._rows = iter(self._open())
                if self._skip:
                    n, self._skip = self._skip, 0
                    if not self._drop(n):
                        # The stream is shorter than the saved position (the data changed):
                        # that epoch is over, start the next one from its beginning.
                        self.epoch += 1
                        self._rows = None
                        continue
                    self.position = n
            try:
                row = next(self._rows)
            except StopIteration:
                if self.position == 0:
                    raise EmptySourceError(
                        f"task {self.task!r}: its data stream delivered no row in a whole epoch "
                        "(empty split, or fewer rows than training workers)"
                    ) from None
                self.epoch += 1
                self.position = 0
                self._rows = None
                continue
            self.position += 1
            return row

    def _drop(self, n: int) -> bool:
        """Drop ``n`` rows of the fresh epoch; False when it ended first."""
        assert self._rows is not None
        for _ in range(n):
            if next(self._rows, None) is None:
                return False
        return True

    def take(self, n: int) -> list[Row]:
        rows = self._pending[:n]
        del self._pending[:n]
        return rows + [self._next_row() for _ in range(n - len(rows))]

    def warm_up(self) -> None:
        """Open the stream and pull its first row now (the row is handed out first later).

        Starting a Ray Dataset's execution takes seconds; ``TaskMixer.warm_up`` does it
        for every task at once, in threads, while the worker builds its model.
        """
        if not self._pending:
            self._pending.append(self._next_row())

    def state(self) -> SourcePosition:
        # A row pulled by warm_up but not handed out yet is not consumed.
        return SourcePosition(epoch=self.epoch, position=self.position - len(self._pending))


class TaskMixer:
    """Composes each batch from per-task sources: ``counts[task]`` rows of each, in ``TASKS`` order."""

    def __init__(self, sources: Mapping[str, CyclingSource], counts: Mapping[str, int]) -> None:
        missing = [t for t, n in counts.items() if n > 0 and t not in sources]
        if missing:
            raise ValueError(f"no data source for tasks {missing} that the ratio asks for")
        self.sources = dict(sources)
        self.counts = {t: n for t, n in counts.items() if n > 0}

    def next_batch(self) -> list[Row]:
        rows: list[Row] = []
        for task in TASKS:
            n = self.counts.get(task, 0)
            if n:
                rows.extend(self.sources[task].take(n))
        return rows

    def state(self) -> dict[str, SourcePosition]:
        return {task: self.sources[task].state() for task in self.counts}

    def warm_up(self) -> Callable[[], None]:
        """Start every task stream at once in background threads; call the result to wait for them."""
        import threading

        errors: list[BaseException] = []

        def start(source: CyclingSource) -> None:
            try:
                source.warm_up()
            except BaseException as exc:  # re-raised in the caller's thread by wait()
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(self.sources[t],), daemon=True) for t in self.counts]
        for thread in threads:
            thread.start()

        def wait() -> None:
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]

        return wait


def rows_of_batches(batches: Iterable[Any]) -> Iterator[Row]:
    """Rows (plain dicts) of a stream of pyarrow tables, e.g. ``DataIterator.iter_batches(batch_format="pyarrow")``."""
    for table in batches:
        yield from table.to_pylist()
