"""Reading the rows an evaluation scores, with the checks that make bad input fail clearly.

The driver reads every column but the image (ground truth, prompts, captions,
metadata) with pyarrow; the images travel to the model actors through Ray Data,
which reads the same files itself (posegpt/evaluation/predict.py). Rows are
joined back by ``sample_id``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from posegpt.body.skeleton import POSE_DIM
from posegpt.data.schema import POSE_INPUT_TASKS, POSE_INPUT_TOKEN
from posegpt.data.templates import expand, stable_hash
from posegpt.storage import StorageConfig, arrow_filesystem, join

POSE_TOKEN = "<POSE>"
TEXT_ANSWER_TASKS: frozenset[str] = frozenset(
    t for t, (_, outputs) in POSE_INPUT_TASKS.items() if outputs == 0
)
"""Pose-input tasks answered in words (``pose2text``, ``posediff``): the last answer's text is the reference."""
GT_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "task",
    "source",
    "split",
    "conversation",
    "poses",
    "caption",
    "meta",
)
"""Columns the driver reads (everything but the image bytes)."""
DESCRIPTION_TYPE_KEYS: tuple[str, ...] = ("description_type", "desc_type", "description_kind")
"""``meta`` keys that may carry an RPE row's description type (behaviour, outfit, pose, shape, summary)."""
BBOX_KEYS: tuple[str, ...] = ("bbox", "box", "gt_bbox", "person_bbox")
"""``meta`` keys that may carry the described person's box ``[x0, y0, x1, y1]`` in pixels of the row's image."""


class ShardError(ValueError):
    """Shards that cannot be evaluated: missing, empty, without ground truth, malformed."""


@dataclass
class TaskRows:
    """The rows of one task and split, in file order."""

    task: str
    split: str
    files: list[str]
    sample_ids: list[str]
    sources: list[str]
    poses: np.ndarray
    """(N, 72) ground-truth pose of each row's first ``<POSE>``; for the tasks answered in words
    (``TEXT_ANSWER_TASKS``) the first input pose, the pose described."""
    prompts: list[list[dict[str, str]]]
    """Conversation turns before the first assistant turn holding ``<POSE>`` (ends with a user turn); for
    the pose-input tasks the turns before the last assistant turn."""
    captions: list[str | None]
    meta: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    """Every row of ``files`` is here (False when cut to ``max_rows``)."""
    inputs: list[np.ndarray] = field(default_factory=list)
    """Per row, the (k, 72) poses its prompt gives the model (one per ``<POSE_IN>``, in order); (0, 72) for
    rows without pose inputs. Empty list: no row was read with inputs (pose-answer tasks)."""
    references: list[str] = field(default_factory=list)
    """``TEXT_ANSWER_TASKS``: each row's reference answer (the caption or modifier text); else empty."""

    def __len__(self) -> int:
        return len(self.sample_ids)

    def query_texts(self) -> list[str]:
        """The description of each row: its caption, else its last user turn without the image marker."""
        out = []
        for caption, prompt in zip(self.captions, self.prompts, strict=True):
            if caption:
                out.append(caption)
            else:
                out.append(prompt[-1]["content"].replace("<image>", "").strip())
        return out

    def description_types(self) -> list[str] | None:
        """Each row's description type from ``meta`` (None when no row carries one)."""
        types = [next((str(m[k]) for k in DESCRIPTION_TYPE_KEYS if m.get(k)), "") for m in self.meta]
        return types if any(types) else None

    def bboxes(self) -> list[list[float] | None]:
        return [
            next((list(map(float, m[k])) for k in BBOX_KEYS if m.get(k) is not None), None) for m in self.meta
        ]

    def select(self, n: int) -> TaskRows:
        """The first ``n`` rows."""
        return self.take(np.arange(min(n, len(self))))

    def take(self, idx: np.ndarray) -> TaskRows:
        """The rows at ``idx``, in that order."""
        ids = [int(i) for i in idx]
        return TaskRows(
            self.task,
            self.split,
            self.files,
            [self.sample_ids[i] for i in ids],
            [self.sources[i] for i in ids],
            self.poses[ids],
            [self.prompts[i] for i in ids],
            [self.captions[i] for i in ids],
            [self.meta[i] for i in ids],
            complete=self.complete and len(set(ids)) == len(self),
            inputs=[self.inputs[i] for i in ids] if self.inputs else [],
            references=[self.references[i] for i in ids] if self.references else [],
        )

    def subset_per_source(self, n: int, seed: int) -> TaskRows:
        """A seeded random subset of ``n`` rows of each source (``subset_indices``), in file order."""
        labels = np.asarray(self.sources, dtype=object)
        keep = []
        for source in sorted(set(self.sources)):
            where = np.flatnonzero(labels == source)
            keep.append(where[subset_indices([self.sample_ids[i] for i in where], n, seed)])
        return self.take(np.sort(np.concatenate(keep)))

    def rephrased(self, preset: str, seed: int) -> TaskRows:
        """The same rows asked with ``preset``'s question (``question_for``); pose-input tasks as written
        (every preset phrases them alike)."""
        if self.task in POSE_INPUT_TASKS:
            return self
        prompts = [
            question_for(self.task, c, s, preset, seed)
            for s, c in zip(self.sample_ids, self.captions, strict=True)
        ]
        return TaskRows(
            self.task,
            self.split,
            self.files,
            self.sample_ids,
            self.sources,
            self.poses,
            prompts,
            self.captions,
            self.meta,
            complete=self.complete,
        )


def question_for(
    task: str, caption: str | None, sample_id: str, preset: str, seed: int
) -> list[dict[str, str]]:
    """The query of a row asked with a template preset: its question rebuilt from the caption (one user turn)."""
    if task != "image2pose" and not (caption and caption.strip()):
        raise ShardError(
            f"{task}: sample {sample_id!r} has no caption, so its question cannot be asked with preset {preset!r}"
        )
    conversation, _ = expand(task, caption, sample_id, seed, preset)
    return conversation[:1]


def subset_indices(sample_ids: list[str], n: int, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``n`` ids (all when ``n`` is 0 or ≥ len), in file order.

    The draw ranks each id by a hash of (seed, id), so the same ids give the same
    subset whatever their order or the file they come from.
    """
    if n <= 0 or n >= len(sample_ids):
        return np.arange(len(sample_ids))
    keys = np.array([stable_hash(f"{seed}:{sid}") for sid in sample_ids], dtype=np.uint64)
    return np.sort(np.argsort(keys, kind="stable")[:n])


def split_dir(shard_root: str, task: str, split: str) -> str:
    return join(shard_root, task, split)


def list_shard_files(
    shard_root: str, task: str, split: str, storage: StorageConfig | None = None
) -> list[str]:
    """Sorted Parquet files of ``<root>/<task>/<split>/`` as URIs/paths (empty list when none)."""
    uri = split_dir(shard_root, task, split)
    fs, path = arrow_filesystem(uri, storage)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    names = sorted(
        i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
    )
    return [join(uri, n) for n in names]


def read_task_rows(
    shard_root: str,
    task: str,
    split: str,
    storage: StorageConfig | None = None,
    need_captions: bool = False,
    max_rows: int = 0,
) -> TaskRows:
    """All rows of a task's split (or the first ``max_rows``), checked for ground truth.

    Raises ``ShardError`` naming the folder, file or sample when the split has no
    shards, no rows, a row without a pose (or caption, with ``need_captions``), or a
    conversation without a ``<POSE>`` answer.
    """
    files = list_shard_files(shard_root, task, split, storage)
    where = split_dir(shard_root, task, split)
    if not files:
        raise ShardError(f"no Parquet shards in {where}: the {task!r} task has no {split!r} split there")
    tables = []
    total = 0
    for f in files:
        fs, path = arrow_filesystem(f, storage)
        schema = pq.read_schema(path, filesystem=fs)
        missing = [c for c in GT_COLUMNS if c not in schema.names]
        if missing:
            raise ShardError(f"{f}: missing columns {missing} (not a QA shard of schema version 1?)")
        table = pq.read_table(path, columns=list(GT_COLUMNS), filesystem=fs)
        tables.append(table)
        total += table.num_rows
        if max_rows and total >= max_rows:
            break
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        raise ShardError(f"{where}: the {split!r} split of {task!r} is empty (0 rows in {len(files)} files)")
    complete = len(tables) == len(files) and not (max_rows and table.num_rows > max_rows)
    if max_rows:
        table = table.slice(0, max_rows)
    rows = table.to_pylist()
    parsed = _parse_rows(rows, task, split, files[: len(tables)], need_captions)
    parsed.complete = complete
    return parsed


def _parse_rows(
    rows: Sequence[dict[str, Any]], task: str, split: str, files: list[str], need_captions: bool
) -> TaskRows:
    ids, sources, poses, prompts, captions, metas = [], [], [], [], [], []
    inputs: list[np.ndarray] = []
    references: list[str] = []
    seen: set[str] = set()
    for row in rows:
        sid = str(row["sample_id"])
        if sid in seen:
            raise ShardError(f"{task}/{split}: sample_id {sid!r} appears twice; sample ids must be unique")
        seen.add(sid)
        pose_list = row.get("poses")
        if not pose_list:
            raise ShardError(
                f"{task}/{split}: sample {sid!r} has no ground-truth pose; pose metrics need one per row "
                f"(shards in {files[0].rsplit('/', 1)[0]})"
            )
        all_poses = np.asarray(pose_list, dtype=np.float32)
        if all_poses.ndim != 2 or all_poses.shape[1] != POSE_DIM or not np.isfinite(all_poses).all():
            raise ShardError(
                f"{task}/{split}: sample {sid!r} has a malformed pose (shape {all_poses.shape} or non-finite)"
            )
        conversation = row.get("conversation") or []
        if task in POSE_INPUT_TASKS:
            prompt, given, answered, reference = split_pose_input_row(conversation, all_poses, task, sid)
            inputs.append(given)
            references.append(reference)
            pose = answered[0] if len(answered) else given[0]
        else:
            prompt, pose = prompt_turns(conversation, sid), all_poses[0]
        caption = row.get("caption")
        if need_captions and not (caption and str(caption).strip()):
            raise ShardError(
                f"{task}/{split}: sample {sid!r} has no caption; the retrieval recalls need the raw description of every row"
            )
        try:
            meta = json.loads(row.get("meta") or "{}")
        except json.JSONDecodeError as exc:
            raise ShardError(f"{task}/{split}: sample {sid!r} has invalid meta JSON ({exc})") from exc
        ids.append(sid)
        sources.append(str(row.get("source") or "unknown"))
        poses.append(pose)
        prompts.append(prompt)
        captions.append(str(caption) if caption else None)
        metas.append(meta if isinstance(meta, dict) else {})
    return TaskRows(
        task,
        split,
        files,
        ids,
        sources,
        np.stack(poses),
        prompts,
        captions,
        metas,
        inputs=inputs,
        references=references,
    )


def prompt_turns(conversation: Sequence[dict[str, Any]], sample_id: str) -> list[dict[str, str]]:
    """Turns before the first assistant turn that holds ``<POSE>``: the query the model answers."""
    turns = [{"role": str(t["role"]), "content": str(t["content"])} for t in conversation]
    for i, turn in enumerate(turns):
        if turn["role"] == "assistant" and POSE_TOKEN in turn["content"]:
            if i == 0 or turns[i - 1]["role"] != "user":
                raise ShardError(f"sample {sample_id!r}: the pose answer does not follow a user turn")
            return turns[:i]
    raise ShardError(
        f"sample {sample_id!r}: no assistant turn holds {POSE_TOKEN}, so there is nothing to ask the model"
    )


def pose_slots(turns: Sequence[dict[str, Any]]) -> list[tuple[int, bool]]:
    """(turn index, is input) of every pose token in conversation order: ``<POSE_IN>`` in user turns,
    ``<POSE>`` in assistant turns; a row's ``poses`` lists one pose per slot."""
    slots = []
    for i, turn in enumerate(turns):
        user = turn["role"] == "user"
        slots += [(i, user)] * str(turn["content"]).count(POSE_INPUT_TOKEN if user else POSE_TOKEN)
    return slots


def query_of(
    conversation: Sequence[dict[str, Any]], poses: Any, task: str, sample_id: str
) -> tuple[list[dict[str, str]], np.ndarray]:
    """The turns the model answers and the input poses they hold ((k, 72), ``<POSE_IN>`` order).

    Pose-answer tasks: the turns before the first assistant turn holding ``<POSE>``; the pose-input
    tasks: the turns before the last assistant turn (the answer scored, after any history).
    """
    turns = [{"role": str(t["role"]), "content": str(t["content"])} for t in conversation]
    if task in POSE_INPUT_TASKS:
        answer = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=-1)
        if answer <= 0:
            raise ShardError(f"sample {sample_id!r}: no assistant turn answers the {task} question")
        prompt = turns[:answer]
    else:
        prompt = prompt_turns(turns, sample_id)
    slots = pose_slots(turns)
    pose_array = np.zeros((0, POSE_DIM), np.float32) if poses is None else np.asarray(list(poses), np.float32)
    asked = [k for k, (turn, _) in enumerate(slots) if turn < len(prompt)]
    if len(pose_array) < len(asked):
        raise ShardError(
            f"sample {sample_id!r}: the turns asked hold {len(asked)} pose tokens (<POSE_IN> and <POSE>) "
            f"but poses holds {len(pose_array)}"
        )
    given = [k for k in asked if slots[k][1]]
    return prompt, pose_array[given].reshape(-1, POSE_DIM)


def split_pose_input_row(
    conversation: Sequence[dict[str, Any]], poses: np.ndarray, task: str, sample_id: str
) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray, str]:
    """A pose-input row as (prompt turns, input poses (k, 72), answered poses of the scored turn (m, 72),
    reference text of the scored turn); ShardError when it lacks the inputs or answers its task needs."""
    prompt, given = query_of(conversation, poses, task, sample_id)
    need_in, need_out = POSE_INPUT_TASKS[task]
    answer = dict(conversation[len(prompt)])
    slots = pose_slots([*conversation[: len(prompt) + 1]])
    answered = np.asarray(poses, np.float32)[[k for k, (turn, _) in enumerate(slots) if turn == len(prompt)]]
    if len(given) < need_in or len(answered) < need_out:
        raise ShardError(
            f"sample {sample_id!r}: a {task} row needs {need_in} input poses and {need_out} answered ones, "
            f"its scored turn has {len(given)} and {len(answered)}"
        )
    return prompt, given, answered.reshape(-1, POSE_DIM), str(answer["content"])


def read_manifest(shard_root: str, storage: StorageConfig | None = None) -> dict[str, Any] | None:
    """``<root>/manifest.json`` as a dict, or None when there is none."""
    from posegpt.storage import exists, read_bytes

    uri = join(shard_root, "manifest.json")
    if not exists(uri, storage):
        return None
    return json.loads(read_bytes(uri, storage))
