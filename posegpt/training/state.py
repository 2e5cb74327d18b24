"""What a training checkpoint holds besides the model, and how a worker reads it back.

A Ray Train checkpoint of this project is a PoseGPT model checkpoint directory
(``adapter/``, ``pose_head.safetensors``, ``tokenizer/``, ``config.yaml``: loadable
by ``posegpt.model.checkpoint.load_checkpoint`` as is) plus what resuming needs::

    deepspeed/               engine state: trainable weights, optimizer, LR schedule (one shard per rank)
    train_state.json         step, samples seen, MLflow run id, one entry per (re)start
    data_state/rank<r>.json  each rank's position in each task stream

Every rank writes its own files into a local folder and reports it; Ray Train
merges the folders of all ranks into one checkpoint in storage.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posegpt.training.mixing import SourcePosition

DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
TRAIN_STATE_FILE = "train_state.json"
DATA_STATE_DIR = "data_state"


@dataclass
class TrainState:
    """Progress of a run, saved with every checkpoint."""

    step: int = 0
    """Optimizer steps done."""
    samples_seen: int = 0
    """Training samples consumed by all ranks together."""
    mlflow_run_id: str | None = None
    """The run's MLflow run id (the same across restarts)."""
    starts: list[dict[str, Any]] = field(default_factory=list)
    """One entry per start of the worker group: ``{"start_step", "world_size", "time"}``."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, folder: str | Path) -> TrainState:
        path = Path(folder) / TRAIN_STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint {folder} has no {TRAIN_STATE_FILE}: not a training checkpoint"
            )
        data = json.loads(path.read_text())
        return cls(**data)


def write_train_state(folder: str | Path, state: TrainState) -> None:
    Path(folder, TRAIN_STATE_FILE).write_text(state.to_json())


def write_data_state(folder: str | Path, rank: int, positions: dict[str, SourcePosition]) -> None:
    out = Path(folder, DATA_STATE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps({t: asdict(p) for t, p in positions.items()}))


def read_data_state(folder: str | Path, rank: int) -> dict[str, SourcePosition]:
    """This rank's stream positions; empty when the checkpoint was written by fewer ranks."""
    path = Path(folder, DATA_STATE_DIR, f"rank{rank}.json")
    if not path.is_file():
        return {}
    return {t: SourcePosition(**p) for t, p in json.loads(path.read_text()).items()}


class StatusFile:
    """``<folder>/rank<r>.json``: pid, host, attempt and current step of one worker, kept current.

    Operators (and the fault test) read it to find a worker's process; it is
    replaced atomically so a reader never sees half a file.
    """

    def __init__(self, folder: str | Path | None, rank: int) -> None:
        self.path = Path(folder, f"rank{rank}.json") if folder else None
        self.fields: dict[str, Any] = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname()}
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, **fields: Any) -> None:
        if self.path is None:
            return
        self.fields.update(fields, time=time.time())
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.fields))
        tmp.replace(self.path)
