"""PoseFix (ICCV 2023 release) on AMASS → ``poseedit`` and ``posediff`` items.

The release (``posefix_dataset_release``) holds:

- ``ids_2_dataset_sequence_and_frame_index_100k.json``: pose id → ``["AMASS", <npz path>, <frame>]``
  (PoseScript's file; looked up in the PoseFix folder, else in ``sources.<name>.posescript``);
- ``pair_id_2_pose_ids.json``: a list whose entry ``k`` is ``[pose A id, pose B id]`` of pair ``k``;
- ``{split}_in_sequence_pair_ids.json`` and ``{split}_out_sequence_pair_ids.json``: pair ids per split;
- modifier files mapping a pair id to a string or a list of strings: ``posefix_human_6157.json``
  (human), ``posefix_paraphrases_4284.json`` and ``posefix_auto_135305.json`` (machine-written).

A modifier says how to turn pose A into pose B. Every pair gives a ``poseedit`` row (A and the
modifier in, B out) and a ``posediff`` row (A and B in, the modifier out), or one of them
(``sources.<name>.tasks``); ``poses`` is ``[A, B]``
in both. Poses are converted as PoseScript's (SMPL-H → SMPL, yaw of the root zeroed, then
``Rx(+90°)``), except that in an *in-sequence* pair (A and B from the same AMASS sequence) B gets
A's yaw correction instead of its own, as PoseFix's loader does, so the turn between them stays.

Label selection as for PoseScript: a human modifier when there is one, else one machine modifier,
picked by the config seed and the pair id; ``all_captions`` makes a row of each.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pipelines.prepare_config import SourceConfig
from pipelines.sources.amass import AmassFiles, smplh_to_smpl
from pipelines.sources.inputs import RawFileError, ReadContext, dataset_name
from pipelines.sources.items import Item, as_floats, in_part, owns_shared, reject_item, row_item
from pipelines.sources.posescript import V2, choose_captions, read_captions, read_ids, read_split_lists
from posegpt.body.skeleton import AMASS_BODY_JOINTS
from posegpt.geometry import axis_angle_to_rotmat, rot_x, rot_z, rotmat_to_axis_angle, yaw_zyx

PAIRS_FILE = "pair_id_2_pose_ids.json"
SPLIT_FILES = ("{split}_in_sequence_pair_ids.json", "{split}_out_sequence_pair_ids.json")
"""Pair ids of a split: in-sequence pairs first, then out-of-sequence ones (PoseFix's order)."""
HUMAN_FILES = ("posefix_human_6157.json",)
AUTO_FILES = ("posefix_paraphrases_4284.json", "posefix_auto_135305.json")
TASKS = {"poseedit": "edit", "posediff": "diff"}
"""Tasks of each pair → the suffix of their sample ids (``<dataset>:<pair id>[:<caption>]:<suffix>``)."""


def read_pairs(ctx: ReadContext, uri: str) -> list[tuple[int, int] | None]:
    """Pair id (list index) → (pose A id, pose B id), or None for an entry that is not two ids."""
    data = ctx.read_json(uri)
    if not isinstance(data, list):
        raise RawFileError(f"{uri}: expected a JSON list of [pose A id, pose B id] pairs")
    out: list[tuple[int, int] | None] = []
    for entry in data:
        ok = isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) for v in entry)
        out.append((int(entry[0]), int(entry[1])) if ok else None)
    return out


def in_sequence_root(root_a: np.ndarray, root_b: np.ndarray) -> np.ndarray:
    """B's camera-frame root when B is turned by A's yaw correction (both roots in AMASS's z-up world)."""
    ra = axis_angle_to_rotmat(torch.tensor(np.asarray(root_a), dtype=torch.float64))
    rb = axis_angle_to_rotmat(torch.tensor(np.asarray(root_b), dtype=torch.float64))
    out = rot_x(math.pi / 2, dtype=rb.dtype) @ rot_z(-yaw_zyx(ra), dtype=rb.dtype) @ rb
    return rotmat_to_axis_angle(out).numpy().astype(np.float32)


def pair_poses(raw_a: np.ndarray, raw_b: np.ndarray, in_sequence: bool) -> tuple[np.ndarray, np.ndarray]:
    """(72,) SMPL poses A and B of one pair in the camera-frame convention."""
    a, b = smplh_to_smpl(np.stack([raw_a[: 3 * AMASS_BODY_JOINTS], raw_b[: 3 * AMASS_BODY_JOINTS]]))
    if in_sequence:
        b = b.copy()
        b[:3] = in_sequence_root(raw_a[:3], raw_b[:3])
    return a, b


def _ids_uri(ctx: ReadContext, folder: str, source: SourceConfig) -> str:
    local = ctx.path(V2.ids_file, folder)
    if ctx.exists(local) or not source.posescript:
        return local
    return ctx.path(V2.ids_file, ctx.path(source.posescript))


def read(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``poseedit`` and ``posediff`` items of one PoseFix folder, split by split, in the split files' order.

    With ``part``, only its share of the pair ids; problems of the shared files (ids, pairs,
    modifier files) are reported by the part with offset 0.
    """
    shared = owns_shared(part)
    dataset = dataset_name(name, source)
    folder = ctx.path(source.path)
    pairs_uri = ctx.path(PAIRS_FILE, folder)
    try:
        ids_uri = _ids_uri(ctx, folder, source)
        ids = read_ids(ctx, ids_uri)
        pairs = read_pairs(ctx, pairs_uri)
    except (RawFileError, FileNotFoundError) as exc:
        if shared:
            yield reject_item(name, dataset, folder, f"PoseFix: {exc}")
        return

    texts: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    """pair id → [(modifier, label source, file)], human files first."""
    for files, label in ((HUMAN_FILES, "human"), (AUTO_FILES, "auto")):
        for fname in files:
            uri = ctx.path(fname, folder)
            if not ctx.exists(uri):
                continue
            try:
                modifiers = read_captions(ctx, uri)
            except RawFileError as exc:
                if shared:
                    yield reject_item(name, dataset, uri, str(exc))
                continue
            for pair_id, values in modifiers.items():
                if not 0 <= pair_id < len(pairs):
                    if shared:
                        yield reject_item(
                            name,
                            dataset,
                            uri,
                            f"modifier for unknown pair id {pair_id} in {uri} (not in {PAIRS_FILE})",
                            f"{dataset}:{pair_id}",
                        )
                    continue
                texts[pair_id].extend((t, label, uri) for t in values)

    files = [(split, ctx.path(p.format(split=split), folder)) for split in source.splits for p in SPLIT_FILES]
    listed, errors = read_split_lists(ctx, files, "pair")
    if shared:
        for uri, reason in errors:
            yield reject_item(name, dataset, uri, f"PoseFix split file: {reason}")
    listed = [entry for k, entry in enumerate(listed) if in_part(part, k)]

    # Raw frames: the in-sequence correction needs the z-up roots.
    frames = AmassFiles(ctx, source.amass_root, keep=4, convert=False)
    tasks = source.reader_tasks()
    for split, split_uri, pair_id in listed:
        yield from _pair_items(
            name, dataset, split, split_uri, pair_id, pairs, ids, texts, frames, ctx, pairs_uri, tasks
        )


def _pair_items(
    name: str,
    dataset: str,
    split: str,
    split_uri: str,
    pair_id: int,
    pairs: list[tuple[int, int] | None],
    ids: dict[int, tuple[str, int]],
    texts: dict[int, list[tuple[str, str, str]]],
    frames: AmassFiles,
    ctx: ReadContext,
    pairs_uri: str,
    tasks: tuple[str, ...],
) -> Iterator[Item]:
    sid = f"{dataset}:{pair_id}"
    if not 0 <= pair_id < len(pairs) or pairs[pair_id] is None:
        what = "has no entry" if not 0 <= pair_id < len(pairs) else "is not [pose A id, pose B id]"
        yield reject_item(
            name, dataset, split_uri, f"pair id {pair_id} of {split_uri} {what} in {pairs_uri}", sid
        )
        return
    pose_ids = pairs[pair_id]
    assert pose_ids is not None
    base: dict[str, Any] = {"file": pairs_uri, "pair_id": pair_id, "pose_ids": list(pose_ids)}
    unknown = [pid for pid in pose_ids if pid not in ids]
    if unknown:
        yield reject_item(
            name, dataset, pairs_uri, f"pair id {pair_id}: pose ids {unknown} have no AMASS entry", sid, base
        )
        return
    (rel_a, frame_a), (rel_b, frame_b) = ids[pose_ids[0]], ids[pose_ids[1]]
    in_sequence = rel_a == rel_b
    base.update(amass_paths=[rel_a, rel_b], frames=[frame_a, frame_b], in_sequence=in_sequence)
    uri_a, raw_a = frames.frame(rel_a, frame_a)
    uri_b, raw_b = frames.frame(rel_b, frame_b)
    base["amass"] = [uri_a, uri_b]
    for which, raw, uri in (("A", raw_a, uri_a), ("B", raw_b, uri_b)):
        if isinstance(raw, str):
            yield reject_item(name, dataset, uri, f"pair id {pair_id} pose {which}: {raw}", sid, base)
            return
    assert not isinstance(raw_a, str) and not isinstance(raw_b, str)
    pose_a, pose_b = pair_poses(raw_a, raw_b, in_sequence)

    entries = texts.get(pair_id, [])
    if not entries:
        yield reject_item(
            name, dataset, pairs_uri, f"pair id {pair_id} has no modifier in the release", sid, base
        )
        return
    for index, (text, _, where) in enumerate(entries):
        if not text.strip():
            meta = {**base, "caption_file": where, "caption_index": index}
            yield reject_item(
                name,
                dataset,
                where,
                f"empty modifier for pair id {pair_id} in {where}",
                f"{sid}:{index}",
                meta,
            )
    kept = [(i, t, label) for i, (t, label, _) in enumerate(entries) if t.strip()]
    if not kept:
        return
    human = [t for _, t, label in kept if label == "human"]
    auto = [t for _, t, label in kept if label != "human"]
    # choose_captions indexes human + auto: map back through ``kept`` (human files were read first).
    order = [k for k in kept if k[2] == "human"] + [k for k in kept if k[2] != "human"]
    chosen = choose_captions(pair_id, human, auto, ctx.seed, ctx.all_captions, key=f"posefix:{pair_id}")
    for k, text, label in chosen:
        index = order[k][0]
        row_id = f"{sid}:{index}" if ctx.all_captions else sid
        meta = {**base, "caption_file": entries[index][2], "caption_index": index}
        for task in tasks:
            suffix = TASKS[task]
            inputs = [0] if task == "poseedit" else [0, 1]
            yield row_item(
                name,
                f"{row_id}:{suffix}",
                task,
                dataset,
                split,
                pairs_uri,
                poses=[as_floats(pose_a), as_floats(pose_b)],
                text=text,
                caption=" ".join(text.split()),
                label_source=label,
                meta={**meta, "pose_inputs": inputs},
            )
