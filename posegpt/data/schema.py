"""The QA shard schema (DESIGN.md, version 1), the rejects schema, and row validation.

Every row the prepare job writes passes ``validate_row``; a row that does not goes
to ``rejects/`` with the reason it returns. Training, evaluation and serving read
the same column names from here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from posegpt.body.skeleton import NUM_BETAS, NUM_JOINTS, POSE_DIM

SCHEMA_VERSION = 1
"""Bumped whenever a column is added, removed or changes meaning."""

TASKS: tuple[str, ...] = (
    "text2pose",
    "image2pose",
    "vqa",
    "spg",
    "rpe",
    "person_crop",
    "pose2text",
    "posediff",
    "poseedit",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
ROLES: tuple[str, ...] = ("user", "assistant")
LABEL_SOURCES: tuple[str, ...] = ("human", "auto")
POSE_TOKEN = "<POSE>"
POSE_INPUT_TOKEN = "<POSE_IN>"
"""Placeholder of a pose given to the model (user turns only), as ``<image>`` is for an image."""
IMAGE_TOKEN = "<image>"

TASKS_WITH_IMAGE: frozenset[str] = frozenset({"image2pose", "rpe", "person_crop"})
"""Tasks whose rows must carry an image (``vqa`` rows may be text-only)."""
TASKS_WITH_POSE: frozenset[str] = frozenset(
    {"text2pose", "image2pose", "spg", "rpe", "pose2text", "posediff", "poseedit"}
)
"""Tasks whose rows must carry at least one pose."""
POSE_INPUT_TASKS: dict[str, tuple[int, int]] = {"pose2text": (1, 0), "posediff": (2, 0), "poseedit": (1, 1)}
"""Tasks that read poses: (``<POSE_IN>`` in user turns, ``<POSE>`` in assistant turns) each row needs at least.

``poses`` holds one pose per pose token, input or output, in conversation order, so the
input poses of a single-turn row come first; ``meta["pose_inputs"]`` lists their indices."""
QUERY_TASKS: frozenset[str] = frozenset({"person_crop"})
"""Tasks whose rows are one user turn awaiting an answer, with no pose: inputs for prediction (detected person crops)."""

MAX_ROTATION_ANGLE = 2.0 * math.pi
"""Largest axis-angle norm accepted (radians): above it a pose is in degrees or corrupt."""

POSE_TYPE = pa.list_(pa.float32(), POSE_DIM)
TURN_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

QA_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("conversation", pa.list_(TURN_TYPE), nullable=False),
        pa.field("image", pa.binary()),
        pa.field("poses", pa.list_(POSE_TYPE)),
        # Not a fixed_size_list: pyarrow 25 cannot read a nullable top-level one back from Parquet.
        pa.field("betas", pa.list_(pa.float32())),
        pa.field("caption", pa.string()),
        pa.field("label_source", pa.string()),
        pa.field("meta", pa.string(), nullable=False),
    ]
)
"""Columns of every QA shard, in this order (DESIGN.md, "QA shard schema")."""

REJECT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("meta", pa.string(), nullable=False),
    ]
)
"""Columns of ``rejects/*.parquet``: what was dropped, where it came from, and why."""

QA_COLUMNS: tuple[str, ...] = tuple(QA_SCHEMA.names)
REJECT_COLUMNS: tuple[str, ...] = tuple(REJECT_SCHEMA.names)


def _check_conversation(
    conversation: Any, has_image: bool, query: bool = False
) -> tuple[str | None, int, int]:
    """(reason or None, ``<POSE_IN>`` count in user turns, ``<POSE>`` count in assistant turns)."""
    if not isinstance(conversation, Sequence) or isinstance(conversation, str) or not conversation:
        return "conversation is empty or not a list of turns", 0, 0
    inputs = 0
    poses = 0
    images = 0
    for i, turn in enumerate(conversation):
        if not isinstance(turn, Mapping) or set(turn) != {"role", "content"}:
            return f"conversation turn {i} is not a {{role, content}} record", 0, 0
        role, content = turn["role"], turn["content"]
        expected = ROLES[i % 2]
        if role != expected:
            return (
                f"conversation turn {i} has role {role!r}, expected {expected!r} (turns alternate, user first)",
                0,
                0,
            )
        if not isinstance(content, str) or not content.strip():
            return f"conversation turn {i} has empty content", 0, 0
        if role == "user" and POSE_TOKEN in content:
            return f"conversation turn {i} (user) holds {POSE_TOKEN}", 0, 0
        if role == "assistant" and POSE_INPUT_TOKEN in content:
            return (
                f"conversation turn {i} (assistant) holds {POSE_INPUT_TOKEN}; only user turns give poses",
                0,
                0,
            )
        poses += content.count(POSE_TOKEN) if role == "assistant" else 0
        inputs += content.count(POSE_INPUT_TOKEN) if role == "user" else 0
        n_img = content.count(IMAGE_TOKEN)
        if n_img and i != 0:
            return f"conversation turn {i} holds {IMAGE_TOKEN}; only the first user turn may", 0, 0
        images += n_img
    if query and len(conversation) != 1:
        return f"a query row holds one user turn, got {len(conversation)} turns", 0, 0
    if len(conversation) % 2 and not query:
        return "conversation ends with a user turn (no answer)", 0, 0
    if has_image and images != 1:
        return (
            f"row has an image but its first user turn holds {IMAGE_TOKEN} {images} times (expected once)",
            0,
            0,
        )
    if not has_image and images:
        return f"row has no image but its conversation holds {IMAGE_TOKEN}", 0, 0
    return None, inputs, poses


def check_pose(pose: Any, where: str = "pose") -> str | None:
    """Reason a single pose is unusable (length, finiteness, angle range), or None."""
    try:
        arr = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError):
        return f"{where} is not numeric"
    if arr.shape != (POSE_DIM,):
        return f"{where} has shape {arr.shape}, expected ({POSE_DIM},)"
    if not np.isfinite(arr).all():
        return f"{where} has non-finite values (NaN or inf)"
    norms = np.linalg.norm(arr.reshape(NUM_JOINTS, 3), axis=1)
    worst = int(np.argmax(norms))
    if norms[worst] > MAX_ROTATION_ANGLE:
        return (
            f"{where} joint {worst} rotates by {norms[worst]:.2f} rad, more than {MAX_ROTATION_ANGLE:.2f} "
            "(degrees instead of radians?)"
        )
    return None


def validate_row(row: Mapping[str, Any]) -> str | None:
    """The reason ``row`` does not fit ``QA_SCHEMA`` and the conventions of DESIGN.md, or None.

    Checks: every column present and typed; known task and split; conversation
    alternating user/assistant with ``<image>`` once in the first user turn exactly
    when there is an image; one ``<POSE>`` (answers) or ``<POSE_IN>`` (user turns) per pose, in
    conversation order, at least the counts ``POSE_INPUT_TASKS`` names; poses finite, 72 values,
    rotation angles within ``MAX_ROTATION_ANGLE``; betas exactly 10 finite values;
    ``meta`` a JSON object. Image bytes are not decoded here (``posegpt.data.crops.decode_image`` does that).
    """
    missing = [c for c in QA_COLUMNS if c not in row]
    if missing:
        return f"missing columns {missing}"
    for name in ("sample_id", "source"):
        if not isinstance(row[name], str) or not row[name]:
            return f"{name} is empty or not a string"
    if row["task"] not in TASKS:
        return f"unknown task {row['task']!r} (known: {', '.join(TASKS)})"
    if row["split"] not in SPLITS:
        return f"unknown split {row['split']!r} (known: {', '.join(SPLITS)})"
    task = row["task"]
    image = row["image"]
    if image is not None and (not isinstance(image, bytes | bytearray) or not image):
        return "image is not encoded bytes"
    if task in TASKS_WITH_IMAGE and image is None:
        return f"task {task} needs an image"
    reason, input_tokens, pose_tokens = _check_conversation(
        row["conversation"], image is not None, task in QUERY_TASKS
    )
    if reason:
        return reason
    poses = row["poses"]
    n_poses = 0 if poses is None else len(poses)
    if task in TASKS_WITH_POSE and n_poses == 0:
        return f"task {task} needs a pose"
    need_in, need_out = POSE_INPUT_TASKS.get(task, (0, 0))
    if input_tokens < need_in or pose_tokens < need_out:
        return (
            f"task {task} needs {need_in} {POSE_INPUT_TOKEN} and {need_out} {POSE_TOKEN}, "
            f"conversation holds {input_tokens} and {pose_tokens}"
        )
    if input_tokens + pose_tokens != n_poses:
        inputs = f"{POSE_INPUT_TOKEN} {input_tokens} times and " if input_tokens else ""
        return f"conversation holds {inputs}{POSE_TOKEN} {pose_tokens} times for {n_poses} poses"
    for i, pose in enumerate(poses or ()):
        reason = check_pose(pose, f"pose {i}")
        if reason:
            return reason
    betas = row["betas"]
    if betas is not None:
        arr = np.asarray(betas, dtype=np.float64)
        if arr.shape != (NUM_BETAS,):
            return f"betas has shape {arr.shape}, expected ({NUM_BETAS},)"
        if not np.isfinite(arr).all():
            return "betas has non-finite values"
    caption = row["caption"]
    if caption is not None and (not isinstance(caption, str) or not caption.strip()):
        return "caption is empty"
    if row["label_source"] is not None and row["label_source"] not in LABEL_SOURCES:
        return f"label_source {row['label_source']!r} is not one of {LABEL_SOURCES}"
    try:
        meta = json.loads(row["meta"]) if isinstance(row["meta"], str) else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        return "meta is not a JSON object"
    return None


def empty_row(**values: Any) -> dict[str, Any]:
    """A row dict with every QA column, nulls where ``values`` gives nothing."""
    unknown = set(values) - set(QA_COLUMNS)
    if unknown:
        raise KeyError(f"not QA columns: {sorted(unknown)}")
    return {c: values.get(c) for c in QA_COLUMNS}
