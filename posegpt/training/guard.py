"""Stopping a distributed run on bad data or a non-finite loss, on every rank at once.

A failure seen by one rank (a row that cannot be collated, a NaN loss) must stop
all ranks at the same step, before any of them back-propagates, or the others
hang in the next collective or average the NaN into their weights. Each step
therefore all-reduces a "something went wrong here" flag; when it is set anywhere,
every rank learns every rank's reason and leaves the training loop cleanly.

Such failures are not retried: Ray Train's ``FailureConfig`` would restart the
workers from the last checkpoint and meet the same row again. The workers write
a ``stopped.json`` marker into the run folder instead and return; the driver
raises ``TrainingStopped`` from it. The last checkpoint written before the failure
is left untouched.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

STOP_MARKER = "stopped.json"
"""File in the run folder (``<storage_path>/<run_name>/``) that says why the workers stopped."""


class TrainingStopped(RuntimeError):
    """The run stopped on a failure that a restart would repeat (bad row, non-finite loss)."""


@dataclass
class StopReason:
    """Why one rank wants the run to stop."""

    kind: str
    """``nonfinite_loss`` or ``bad_batch``."""
    step: int
    """Optimizer step (1-based) being computed when it happened."""
    rank: int
    message: str
    sample_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        ids = ", ".join(self.sample_ids) if self.sample_ids else "(none)"
        return f"rank {self.rank}, step {self.step}: {self.message}; sample ids: {ids}"


def combine(reasons: list[StopReason]) -> str:
    """One message for the driver naming the step and every offending rank's sample ids."""
    first = min(r.step for r in reasons)
    kinds = sorted({r.kind for r in reasons})
    lines = [f"training stopped at step {first} ({', '.join(kinds)}):"]
    lines += [f"  {r.describe()}" for r in reasons]
    lines.append("the last checkpoint written before this step is intact; fix the data or settings and rerun")
    return "\n".join(lines)


def encode_reasons(reasons: list[StopReason]) -> bytes:
    return json.dumps(
        {"reasons": [asdict(r) for r in reasons], "message": combine(reasons)}, indent=1
    ).encode()


def decode_message(data: bytes) -> str:
    payload: dict[str, Any] = json.loads(data)
    return str(payload["message"])


def any_rank_failed(reason: StopReason | None, world_size: int) -> list[StopReason]:
    """All ranks' reasons when any rank has one; an empty list when every rank is fine.

    One all-reduce of a single integer per call; the reasons themselves are gathered
    only when something went wrong.
    """
    import torch
    import torch.distributed as dist

    if world_size == 1 or not dist.is_available() or not dist.is_initialized():
        return [reason] if reason else []
    flag = torch.tensor([1 if reason else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if int(flag.item()) == 0:
        return []
    gathered: list[StopReason | None] = [None] * world_size
    dist.all_gather_object(gathered, reason)
    return [r for r in gathered if r is not None]
