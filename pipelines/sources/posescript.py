"""PoseScript (V2 and V1 release layouts) on AMASS → ``text2pose`` items (and ``pose2text`` ones on request).

V2: ``ids_2_dataset_sequence_and_frame_index_100k.json``, ``{split}_ids_100k.json``,
``posescript_human_6293.json``, ``posescript_auto_100k.json``. V1:
``ids_2_dataset_sequence_and_frame_index.json``, ``{split}_ids.json``,
``human6293.json``, ``automatic_A.json`` … ``automatic_F.json``. The ids file maps a
pose id to ``["AMASS", <relative npz path>, <frame>]``; caption files map an id to a
string or a list of strings.

Label selection: a pose with a human caption gets it (one of them, if several);
otherwise one automatic caption, picked by ``random.Random`` seeded with the
config seed and the pose id, so the choice does not depend on reading order.
With ``all_captions`` every caption becomes its own row (``<dataset>:<id>:<k>``).
With ``tasks: [text2pose, pose2text]`` each chosen caption also gives a ``pose2text`` row
(``<row id>:describe``): the pose is the input and the caption the answer.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.prepare_config import SourceConfig
from pipelines.sources.amass import AmassFiles
from pipelines.sources.inputs import RawFileError, ReadContext, dataset_name
from pipelines.sources.items import Item, as_floats, in_part, owns_shared, reject_item, row_item
from posegpt.data.templates import stable_hash


@dataclass(frozen=True)
class Layout:
    """File names of one PoseScript release."""

    name: str
    ids_file: str
    split_file: str
    """Format string with ``{split}``."""
    human_files: tuple[str, ...]
    auto_files: tuple[str, ...]


V2 = Layout(
    "v2",
    "ids_2_dataset_sequence_and_frame_index_100k.json",
    "{split}_ids_100k.json",
    ("posescript_human_6293.json",),
    ("posescript_auto_100k.json",),
)
V1 = Layout(
    "v1",
    "ids_2_dataset_sequence_and_frame_index.json",
    "{split}_ids.json",
    ("human6293.json",),
    tuple(f"automatic_{c}.json" for c in "ABCDEF"),
)
LAYOUTS = {"v1": V1, "v2": V2}


def detect_layout(ctx: ReadContext, folder: str, requested: str) -> Layout:
    if requested in LAYOUTS:
        return LAYOUTS[requested]
    for layout in (V2, V1):
        if ctx.exists(ctx.path(layout.ids_file, folder)):
            return layout
    raise RawFileError(f"{folder} holds neither {V2.ids_file} (PoseScript V2) nor {V1.ids_file} (V1)")


def read_ids(ctx: ReadContext, uri: str) -> dict[int, tuple[str, int]]:
    """pose id → (AMASS-relative npz path, frame index); entries that do not parse raise RawFileError."""
    data = ctx.read_json(uri)
    pairs = data.items() if isinstance(data, dict) else enumerate(data)
    out: dict[int, tuple[str, int]] = {}
    for key, value in pairs:
        try:
            dataset, rel, frame = value
            if str(dataset).upper() != "AMASS":
                raise ValueError(f"dataset {dataset!r} is not AMASS")
            out[int(key)] = (str(rel), int(frame))
        except (TypeError, ValueError) as exc:
            raise RawFileError(f"{uri}: entry {key!r} is not ['AMASS', path, frame] ({exc})") from exc
    return out


def read_split_lists(
    ctx: ReadContext, files: list[tuple[str, str]], what: str
) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
    """``(split, uri, id)`` of every id in the ``(split, uri)`` JSON lists, and ``(uri, reason)`` of those unreadable.

    A missing or malformed split file is a reject of the whole file, reported once by the
    read task that owns the shared files; the other files still count.
    """
    entries: list[tuple[str, str, int]] = []
    errors: list[tuple[str, str]] = []
    for split, uri in files:
        try:
            listed = ctx.read_json(uri)
            if not isinstance(listed, list):
                raise RawFileError(f"{uri}: expected a JSON list of {what} ids")
            entries.extend((split, uri, int(v)) for v in listed)
        except (RawFileError, FileNotFoundError, TypeError, ValueError) as exc:
            errors.append((uri, str(exc)))
    return entries, errors


def read_captions(ctx: ReadContext, uri: str) -> dict[int, list[str]]:
    """id → captions of one caption file (a string or a list of strings per id)."""
    data = ctx.read_json(uri)
    if not isinstance(data, dict):
        raise RawFileError(f"{uri}: expected a JSON object mapping pose ids to captions")
    out: dict[int, list[str]] = {}
    for key, value in data.items():
        try:
            pid = int(key)
        except ValueError as exc:
            raise RawFileError(f"{uri}: key {key!r} is not a pose id") from exc
        texts = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise RawFileError(f"{uri}: captions of pose id {pid} are not a string or a list of strings")
        out[pid] = texts
    return out


def load_poses(
    amass: AmassFiles, wanted: dict[int, tuple[str, int]]
) -> dict[int, tuple[str, np.ndarray | str]]:
    """pose id → (AMASS URI, (72,) pose) or (URI, reason); each sequence file is read once."""
    by_file: dict[str, list[int]] = defaultdict(list)
    for pid, (rel, _) in wanted.items():
        by_file[rel].append(pid)
    out: dict[int, tuple[str, np.ndarray | str]] = {}
    for rel in sorted(by_file):
        for pid in by_file[rel]:
            out[pid] = amass.frame(rel, wanted[pid][1])
    return out


def choose_captions(
    pid: int, human: list[str], auto: list[str], seed: int, all_captions: bool, key: str = ""
) -> list[tuple[int, str, str]]:
    """[(caption index in human + auto, caption, label source)] for one pose id (``key``: seeds the pick)."""
    labelled = [(i, t, "human") for i, t in enumerate(human)] + [
        (len(human) + i, t, "auto") for i, t in enumerate(auto)
    ]
    if all_captions or not labelled:
        return labelled
    rng = random.Random(seed + stable_hash(key or f"posescript:{pid}"))
    pool = labelled[: len(human)] if human else labelled
    return [pool[rng.randrange(len(pool))]]


def read(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``text2pose`` items of one PoseScript folder, split by split, ids in the split files' order.

    With ``part``, only its share of the split lists (every k-th id); problems of the
    release's shared files (ids, caption files) are reported by the part with offset 0.
    """
    shared = owns_shared(part)
    dataset = dataset_name(name, source)
    folder = ctx.path(source.path)
    try:
        layout = detect_layout(ctx, folder, source.layout)
        ids_uri = ctx.path(layout.ids_file, folder)
        ids = read_ids(ctx, ids_uri)
    except (RawFileError, FileNotFoundError) as exc:
        if shared:
            yield reject_item(name, dataset, folder, f"PoseScript: {exc}")
        return

    human: dict[int, list[str]] = defaultdict(list)
    auto: dict[int, list[str]] = defaultdict(list)
    caption_files: dict[int, list[str]] = defaultdict(list)
    for files, target, required in ((layout.human_files, human, False), (layout.auto_files, auto, False)):
        for fname in files:
            uri = ctx.path(fname, folder)
            if not required and not ctx.exists(uri):
                continue
            try:
                captions = read_captions(ctx, uri)
            except RawFileError as exc:
                if shared:
                    yield reject_item(name, dataset, uri, str(exc))
                continue
            for pid, texts in captions.items():
                if pid not in ids:
                    if not shared:
                        continue
                    yield reject_item(
                        name,
                        dataset,
                        uri,
                        f"caption for unknown pose id {pid} in {uri} (not in {layout.ids_file})",
                        sample_id=f"{dataset}:{pid}",
                    )
                    continue
                for text in texts:
                    target[pid].append(text)
                    caption_files[pid].append(uri)

    split_ids, errors = read_split_lists(
        ctx,
        [(split, ctx.path(layout.split_file.format(split=split), folder)) for split in source.splits],
        "pose",
    )
    if shared:
        for uri, reason in errors:
            yield reject_item(name, dataset, uri, f"PoseScript split file: {reason}")
    split_ids = [entry for k, entry in enumerate(split_ids) if in_part(part, k)]

    amass = AmassFiles(ctx, source.amass_root, keep=1)
    poses = load_poses(amass, {pid: ids[pid] for _, _, pid in split_ids if pid in ids})
    for split, split_uri, pid in split_ids:
        sid = f"{dataset}:{pid}"
        if pid not in ids:
            yield reject_item(
                name, dataset, split_uri, f"pose id {pid} of {split_uri} has no entry in {ids_uri}", sid
            )
            continue
        amass_uri, pose = poses[pid]
        rel, frame = ids[pid]

        base: dict[str, Any] = {
            "file": ids_uri,
            "pose_id": pid,
            "amass": amass_uri,
            "amass_path": rel,
            "frame": frame,
            "layout": layout.name,
        }

        texts = human.get(pid, []) + auto.get(pid, [])
        for index, text in enumerate(texts):
            if not text.strip():
                where = caption_files[pid][index]
                yield reject_item(
                    name,
                    dataset,
                    where,
                    f"empty caption for pose id {pid} in {where}",
                    f"{sid}:{index}",
                    {**base, "caption_file": caption_files[pid][index], "caption_index": index},
                )
        n_human = len(human.get(pid, []))
        kept = [(i, t) for i, t in enumerate(texts) if t.strip()]
        chosen = choose_captions(
            pid,
            [t for i, t in kept if i < n_human],
            [t for i, t in kept if i >= n_human],
            ctx.seed,
            ctx.all_captions,
        )
        if not texts:
            yield reject_item(
                name, dataset, ids_uri, f"pose id {pid} has no caption in {layout.name} files", sid
            )
            continue
        for k, text, label in chosen:
            index = kept[k][0]
            row_id = f"{sid}:{index}" if ctx.all_captions else sid
            meta = {**base, "caption_file": caption_files[pid][index], "caption_index": index}
            if isinstance(pose, str):
                yield reject_item(name, dataset, amass_uri, f"pose id {pid}: {pose}", row_id, meta)
                continue
            for task in source.reader_tasks():
                # pose2text rows describe the same pose with the same caption: the pose is the input.
                describe = task == "pose2text"
                yield row_item(
                    name,
                    f"{row_id}:describe" if describe else row_id,
                    task,
                    dataset,
                    split,
                    ids_uri,
                    poses=[as_floats(pose)],
                    text=text,
                    caption=" ".join(text.split()),
                    label_source=label,
                    meta={**meta, "pose_inputs": [0]} if describe else meta,
                )
