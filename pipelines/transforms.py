"""Work item → shard row: read the image, crop or keep it, expand templates, validate.

``transform_item`` is a pure function of the item and ``TransformSettings``; Ray
Data runs it through ``transform_batch`` (``map_batches``) on workers, the local
engine in a loop, and both give the same bytes. Anything that goes wrong with one
item (missing or corrupt image, bad pose, malformed conversation) becomes a reject
record whose reason names the file or id, relative to ``raw_root`` (a reject never
carries the machine's own folders); nothing raises past this module for bad data.

Blocks in (``ITEM_SCHEMA``): one JSON work item per row, the image bytes when the
reader carried them (tar shards), the read part and the item's position in it
(``_part``, ``_seq``: provenance and file names), and on each part's last row (a
marker without an item) the digests of the raw files the part read. Blocks out
(``OUTPUT_SCHEMA``): the QA columns plus those bookkeeping columns, in the same order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipelines.sources.items import Item
from posegpt.data.crops import ImageLimits, crop_box, decode_image, encode_jpeg
from posegpt.data.schema import QA_COLUMNS, QA_SCHEMA, validate_row
from posegpt.data.templates import TemplateConfig, expand_variants
from posegpt.storage import StorageConfig, arrow_filesystem, is_s3, read_object

INPUT_COLUMN = "_input"
REASON_COLUMN = "_reason"
FILE_COLUMN = "_file"
PART_COLUMN = "_part"
SEQ_COLUMN = "_seq"
DIGESTS_COLUMN = "_digests"
IMAGE_COLUMN = "_image"
VARIANT_COLUMN = "_variant"
"""Position of a row among its item's template variants (0 for the first or only row)."""
ITEM_COLUMN = "item"
"""Column of JSON-encoded work items (null on a part's closing marker row)."""

_BOOKKEEPING = [
    pa.field(PART_COLUMN, pa.int64()),
    pa.field(SEQ_COLUMN, pa.int64()),
    pa.field(DIGESTS_COLUMN, pa.string()),
]
ITEM_SCHEMA = pa.schema(
    [pa.field(ITEM_COLUMN, pa.string()), pa.field(IMAGE_COLUMN, pa.binary()), *_BOOKKEEPING]
)
"""Blocks of work items, as the read tasks produce them."""
OUTPUT_SCHEMA = pa.schema(
    [pa.field(f.name, f.type, nullable=True) for f in QA_SCHEMA]
    + [
        pa.field(INPUT_COLUMN, pa.string()),
        pa.field(REASON_COLUMN, pa.string()),
        pa.field(FILE_COLUMN, pa.string()),
        pa.field(VARIANT_COLUMN, pa.int32()),
        *_BOOKKEEPING,
    ]
)
"""What a transform batch returns: the QA columns plus the input name, a reject reason (null when
accepted), the raw file, and the part / position / digests of the item block."""


@dataclass(frozen=True)
class TransformSettings:
    """Everything ``transform_item`` depends on besides the item (sent to every worker)."""

    seed: int = 0
    image_size: int = 336
    crop_padding: float = 1.0
    jpeg_quality: int = 90
    limits: ImageLimits = field(default_factory=ImageLimits)
    storage: StorageConfig = field(default_factory=StorageConfig)
    raw_root: str = ""
    """Prefix stripped from paths in ``meta`` and ``_file``, so rows do not depend on where the data sits."""
    templates: TemplateConfig = field(default_factory=TemplateConfig)
    """Template preset and variants per sample."""


def read_image_bytes(uri: str, storage: StorageConfig) -> bytes:
    """Bytes of one image; FileNotFoundError naming ``uri`` when it is missing."""
    if is_s3(uri):
        fs, path = arrow_filesystem(uri, storage)
        try:
            return read_object(fs, path, uri, storage.max_attempts)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"image not found: {uri}") from exc
    try:
        with open(uri, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise FileNotFoundError(f"image not found: {uri}") from exc


def relative(value: Any, root: str) -> Any:
    """``value`` with the ``root/`` prefix removed from every string inside it."""
    if not root:
        return value
    prefix = root.rstrip("/") + "/"
    if isinstance(value, str):
        return value[len(prefix) :] if value.startswith(prefix) else value
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    return value


def relative_text(text: str, root: str) -> str:
    """``text`` with every occurrence of ``root/`` removed (reasons name raw files relative to the root)."""
    if not root:
        return text
    return text.replace(root.rstrip("/") + "/", "")


def _reject(item: Item, reason: str, settings: TransformSettings) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(QA_COLUMNS)
    out.update(
        sample_id=item.get("sample_id"),
        task=item.get("task"),
        source=item.get("source") or item.get("input"),
        split=item.get("split"),
        meta=json.dumps(relative(item.get("meta") or {}, settings.raw_root), sort_keys=True),
    )
    out[INPUT_COLUMN] = item["input"]
    out[REASON_COLUMN] = relative_text(reason, settings.raw_root)
    out[FILE_COLUMN] = relative(item.get("file"), settings.raw_root)
    return out


def _image_bytes(
    item: Item, settings: TransformSettings, meta: dict[str, Any], carried: bytes | None
) -> bytes:
    spec = item["image"]
    uri = spec["uri"]
    data = carried if carried is not None else read_image_bytes(uri, settings.storage)
    pixels = decode_image(data, settings.limits, relative_text(uri, settings.raw_root))
    if spec.get("crop") is None:
        meta["image_size"] = [int(pixels.shape[1]), int(pixels.shape[0])]
        # Whole images keep their original bytes when they are JPEG or PNG (no re-encoding loss).
        if data[:2] == b"\xff\xd8" or data[:8] == b"\x89PNG\r\n\x1a\n":
            return data
        return encode_jpeg(pixels, settings.jpeg_quality)
    cx, cy, box = spec["crop"]
    crop = crop_box(pixels, (cx, cy), box, settings.crop_padding, settings.image_size)
    meta["crop"] = {
        "padding": settings.crop_padding,
        "side": box * settings.crop_padding,
        "size": settings.image_size,
    }
    return encode_jpeg(crop, settings.jpeg_quality)


def transform_item(
    item: Item, settings: TransformSettings, image_data: bytes | None = None
) -> list[dict[str, Any]]:
    """The output records of one item (QA and reject columns): its rows, or one reject (``_reason`` set).

    A templated item becomes ``settings.templates.variants`` rows in the variant splits (ids
    ``<sample id>:<v>``, ``posegpt.data.templates.expand_variants``), else one; ``_variant`` numbers them.
    ``image_data``: the image's bytes when the reader carried them (else they are read from its URI).
    """
    if "reject" in item:
        return [_reject(item, item["reject"], settings)]
    meta = dict(item.get("meta") or {})
    try:
        image = _image_bytes(item, settings, meta, image_data) if item.get("image") else None
        if item["task"] in ("vqa", "person_crop"):  # these readers give the conversation itself
            variants = [(item["sample_id"], item["conversation"], None)]
        else:
            variants = expand_variants(
                item["task"],
                item.get("text"),
                item["sample_id"],
                settings.seed,
                settings.templates,
                item["split"],
            )
    except (FileNotFoundError, ValueError, OSError) as exc:
        return [_reject(item, str(exc), settings)]
    rows = []
    for v, (sample_id, conversation, template_ids) in enumerate(variants):
        row_meta = meta if template_ids is None else {**meta, "templates": template_ids}
        row = {
            "sample_id": sample_id,
            "task": item["task"],
            "source": item["source"],
            "split": item["split"],
            "conversation": conversation,
            "image": image,
            "poses": item.get("poses"),
            "betas": item.get("betas"),
            "caption": item.get("caption"),
            "label_source": item.get("label_source"),
            "meta": json.dumps(relative(row_meta, settings.raw_root), sort_keys=True),
        }
        reason = validate_row(row)
        if reason:
            # Variants share the data that failed: the item is one reject, not k.
            return [_reject({**item, "meta": row_meta}, f"{item['sample_id']}: {reason}", settings)]
        row[INPUT_COLUMN] = item["input"]
        row[REASON_COLUMN] = None
        row[FILE_COLUMN] = relative(item.get("file"), settings.raw_root)
        row[VARIANT_COLUMN] = v
        rows.append(row)
    return rows


def transform_batch(batch: pa.Table, settings: TransformSettings) -> pa.Table:
    """Ray Data ``map_batches`` function: ITEM_SCHEMA blocks in, OUTPUT_SCHEMA records out, same order."""
    items = batch.column(ITEM_COLUMN).to_pylist()
    images = batch.column(IMAGE_COLUMN).to_pylist()
    records: list[dict[str, Any]] = []
    origin: list[int] = []
    for i, (text, image) in enumerate(zip(items, images, strict=True)):
        out = [{}] if text is None else transform_item(json.loads(text), settings, image)
        records.extend(out)
        origin.extend([i] * len(out))
    table = pa.Table.from_pylist(records, schema=OUTPUT_SCHEMA)
    take = pa.array(origin, type=pa.int64())
    for name in (PART_COLUMN, SEQ_COLUMN, DIGESTS_COLUMN):
        table = table.set_column(table.schema.get_field_index(name), name, batch.column(name).take(take))
    return table
