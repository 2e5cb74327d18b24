"""Reasoning-based pose estimation (``rpe``): multi-person images + a description of one person → ``rpe`` items.

``<path>/rpe_{split}.json``: one entry per described person: ``{"image"`` (relative
to ``image_root``, default ``path``), ``"width"``, ``"height"``, ``"num_people"``,
``"person": {"center", "scale", "bbox" [x0, y0, x1, y1], "pose" (72, camera frame),
"betas" (10), "activity", "position"}``, ``"descriptions": {type: text}}``. Each
description type (behaviour, outfit, pose, shape, summary) becomes its own row with
the whole image; ``meta`` keeps the person's box and the description type.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import RawFileError, ReadContext, dataset_name
from pipelines.sources.items import Item, as_floats, in_part, owns_shared, reject_item, row_item


def read(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``rpe`` items, split by split, entry by entry (those of ``part``), description types in order."""
    dataset = dataset_name(name, source)
    folder = ctx.path(source.path)
    image_root = ctx.path(source.image_root) if source.image_root else folder
    index = -1
    for split in source.splits:
        uri = ctx.path(f"rpe_{split}.json", folder)
        try:
            entries = ctx.read_json(uri)
            if not isinstance(entries, list):
                raise RawFileError(f"{uri}: expected a JSON list")
        except (RawFileError, FileNotFoundError) as exc:
            if owns_shared(part):
                yield reject_item(name, dataset, uri, f"rpe: {exc}")
            continue
        for i, entry in enumerate(entries):
            index += 1
            if not in_part(part, index):
                continue
            try:
                person = entry["person"]
                descriptions = entry["descriptions"]
                image = str(entry["image"])
                pose = as_floats(person["pose"])
                betas = as_floats(person["betas"]) if person.get("betas") is not None else None
                bbox = [float(v) for v in person["bbox"]]
                if not isinstance(descriptions, dict):
                    raise TypeError("descriptions is not an object")
            except (KeyError, TypeError, ValueError) as exc:
                yield reject_item(name, dataset, uri, f"entry {i} of {uri} is malformed ({exc!r})")
                continue
            types = source.description_types or list(descriptions)
            for kind in types:
                sid = f"{dataset}:{split}/{i}:{kind}"
                meta = {
                    "file": uri,
                    "index": i,
                    "image": image,
                    "bbox": bbox,
                    "center": person.get("center"),
                    "scale": person.get("scale"),
                    "description_type": kind,
                    "activity": person.get("activity"),
                    "position": person.get("position"),
                    "num_people": entry.get("num_people"),
                }
                text = descriptions.get(kind)
                if not isinstance(text, str) or not text.strip():
                    yield reject_item(
                        name, dataset, uri, f"entry {i} of {uri} has no {kind!r} description", sid, meta
                    )
                    continue
                text = " ".join(text.split())
                yield row_item(
                    name,
                    sid,
                    "rpe",
                    dataset,
                    split,
                    uri,
                    image={"uri": ctx.path(image, image_root), "crop": None},
                    poses=[pose],
                    betas=betas,
                    text=text,
                    caption=text,
                    meta=meta,
                )
