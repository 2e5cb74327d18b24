"""Speculative pose generation (``spg``): implicit descriptions of PoseScript poses → ``spg`` items.

``<path>/spg_{split}.json``: ``[{"pose_id", "activity", "description"}]`` where the
description names an activity, not the pose ("this person is proposing
marriage"); the pose comes from the PoseScript folder's ids file and AMASS, with
the same conventions as ``text2pose``.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.prepare_config import SourceConfig
from pipelines.sources.amass import AmassFiles
from pipelines.sources.inputs import RawFileError, ReadContext, dataset_name
from pipelines.sources.items import Item, as_floats, in_part, owns_shared, reject_item, row_item
from pipelines.sources.posescript import detect_layout, load_poses, read_ids


def read(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``spg`` items, split by split, in file order (the entries of ``part``)."""
    dataset = dataset_name(name, source)
    folder = ctx.path(source.path)
    ps_folder = ctx.path(source.posescript)
    try:
        layout = detect_layout(ctx, ps_folder, source.layout)
        ids_uri = ctx.path(layout.ids_file, ps_folder)
        ids = read_ids(ctx, ids_uri)
    except (RawFileError, FileNotFoundError) as exc:
        if owns_shared(part):
            yield reject_item(name, dataset, ps_folder, f"spg: PoseScript ids: {exc}")
        return
    entries: list[tuple[str, str, int, dict]] = []
    for split in source.splits:
        uri = ctx.path(f"spg_{split}.json", folder)
        try:
            data = ctx.read_json(uri)
            if not isinstance(data, list):
                raise RawFileError(f"{uri}: expected a JSON list")
        except (RawFileError, FileNotFoundError) as exc:
            if owns_shared(part):
                yield reject_item(name, dataset, uri, f"spg: {exc}")
            continue
        entries.extend((split, uri, i, e) for i, e in enumerate(data))
    entries = [e for k, e in enumerate(entries) if in_part(part, k)]
    wanted = {}
    for _, _, _, e in entries:
        try:
            pid = int(e["pose_id"])
        except (KeyError, TypeError, ValueError):
            continue
        if pid in ids:
            wanted[pid] = ids[pid]
    poses = load_poses(AmassFiles(ctx, source.amass_root, keep=1), wanted)
    for split, uri, i, entry in entries:
        try:
            pid = int(entry["pose_id"])
            description = entry["description"]
            if not isinstance(description, str):
                raise TypeError("description is not a string")
        except (KeyError, TypeError, ValueError) as exc:
            yield reject_item(name, dataset, uri, f"entry {i} of {uri} is malformed ({exc!r})")
            continue
        sid = f"{dataset}:{pid}:{i}"
        meta = {"file": uri, "index": i, "pose_id": pid, "activity": entry.get("activity")}
        if pid not in ids:
            yield reject_item(
                name, dataset, uri, f"description for unknown pose id {pid} in {uri}", sid, meta
            )
            continue
        if not description.strip():
            yield reject_item(name, dataset, uri, f"empty description for pose id {pid} in {uri}", sid, meta)
            continue
        amass_uri, pose = poses[pid]
        meta.update(amass=amass_uri, frame=ids[pid][1])
        if isinstance(pose, str):
            yield reject_item(name, dataset, amass_uri, f"pose id {pid}: {pose}", sid, meta)
            continue
        text = " ".join(description.split())
        yield row_item(
            name, sid, "spg", dataset, split, uri, poses=[as_floats(pose)], text=text, caption=text, meta=meta
        )
