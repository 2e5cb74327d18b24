"""LLaVA instruction data (``llava_v1_5_mix665k.json`` format) → ``vqa`` items.

Each entry: ``id``, optional ``image`` (a path relative to ``image_root``, default
``raw_root``), ``conversations`` of ``{from: human|gpt, value}`` with ``<image>`` in
the first human turn. Text-only entries become rows without an image. The turns
are kept as written, speakers renamed to ``user`` / ``assistant``.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import RawFileError, ReadContext, dataset_name
from pipelines.sources.items import Item, in_part, owns_shared, reject_item, row_item
from posegpt.data.templates import vqa_conversation


def read(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``vqa`` items of one LLaVA JSON file (or of the entries of ``part``), in file order."""
    dataset = dataset_name(name, source)
    uri = ctx.path(source.path)
    split = source.split or "train"
    image_root = ctx.path(source.image_root) if source.image_root else ctx.raw_root
    try:
        entries = ctx.read_json(uri)
        if not isinstance(entries, list):
            raise RawFileError(f"{uri}: expected a JSON list of conversations")
    except (RawFileError, FileNotFoundError) as exc:
        if owns_shared(part):
            yield reject_item(name, dataset, uri, f"LLaVA: {exc}")
        return
    for i, entry in enumerate(entries):
        if not in_part(part, i):
            continue
        if not isinstance(entry, dict) or "id" not in entry:
            yield reject_item(name, dataset, uri, f"entry {i} of {uri} is not an object with an 'id'")
            continue
        sid = f"{dataset}:{entry['id']}"
        meta = {"file": uri, "index": i}
        try:
            turns = entry.get("conversations")
            if not isinstance(turns, list):
                raise ValueError("no 'conversations' list")
            conversation = vqa_conversation(turns)
        except (ValueError, AttributeError) as exc:
            yield reject_item(name, dataset, uri, f"{sid} (entry {i} of {uri}): {exc}", sid, meta)
            continue
        image = None
        if entry.get("image"):
            meta["image"] = str(entry["image"])
            image = {"uri": ctx.path(str(entry["image"]), image_root), "crop": None}
        yield row_item(
            name, sid, "vqa", dataset, split, uri, image=image, conversation=conversation, meta=meta
        )
