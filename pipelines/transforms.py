"""Work item → shard row: read the image, crop or keep it, expand templates, validate.

``transform_item`` is a pure function of the item and ``TransformSettings``; Ray
Data runs it through ``transform_batch`` on workers, the local engine in a loop,
and both give the same bytes. Anything that goes wrong with one item (missing or
corrupt image, bad pose, malformed conversation) becomes a reject record whose
reason names the file or id; nothing raises past this module for bad data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.sources.items import Item
from posegpt.crops import ImageLimits, crop_box, decode_image, encode_jpeg
from posegpt.schema import QA_COLUMNS, QA_SCHEMA, validate_row
from posegpt.storage import StorageConfig, arrow_filesystem, is_s3
from posegpt.templates import expand

INPUT_COLUMN = "_input"
REASON_COLUMN = "_reason"
FILE_COLUMN = "_file"
OUTPUT_SCHEMA = pa.schema(
    [pa.field(f.name, f.type, nullable=True) for f in QA_SCHEMA]
    + [
        pa.field(INPUT_COLUMN, pa.string()),
        pa.field(REASON_COLUMN, pa.string()),
        pa.field(FILE_COLUMN, pa.string()),
    ]
)
"""What a transform batch returns: the QA columns plus the input name, a reject reason (null when accepted), the raw file."""

ITEM_COLUMN = "item"
"""Column of JSON-encoded work items handed to Ray Data."""


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


@lru_cache(maxsize=4)
def _filesystem(
    endpoint: str | None, region: str, timeout: float, bucket_uri: str
) -> tuple[pafs.FileSystem, str]:
    return arrow_filesystem(bucket_uri, StorageConfig(endpoint, region, timeout))


def read_image_bytes(uri: str, storage: StorageConfig) -> bytes:
    """Bytes of one image; FileNotFoundError naming ``uri`` when it is missing."""
    if is_s3(uri):
        bucket = uri[len("s3://") :].split("/", 1)[0]
        fs, _ = _filesystem(storage.endpoint_url, storage.region, storage.connect_timeout_s, f"s3://{bucket}")
        path = uri[len("s3://") :]
        try:
            with fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"image not found: {uri}") from exc
        except OSError as exc:
            if "not found" in str(exc).lower() or "NoSuchKey" in str(exc):
                raise FileNotFoundError(f"image not found: {uri}") from exc
            raise
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
    out[REASON_COLUMN] = reason
    out[FILE_COLUMN] = relative(item.get("file"), settings.raw_root)
    return out


def _image_bytes(item: Item, settings: TransformSettings, meta: dict[str, Any]) -> bytes:
    spec = item["image"]
    uri = spec["uri"]
    data = read_image_bytes(uri, settings.storage)
    pixels = decode_image(data, settings.limits, uri)
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


def transform_item(item: Item, settings: TransformSettings) -> dict[str, Any]:
    """One output record (OUTPUT_SCHEMA columns): a row, or a reject when ``_reason`` is set."""
    if "reject" in item:
        return _reject(item, item["reject"], settings)
    meta = dict(item.get("meta") or {})
    try:
        image = _image_bytes(item, settings, meta) if item.get("image") else None
        if item["task"] in ("vqa", "person_crop"):  # these readers give the conversation itself
            conversation = item["conversation"]
        else:
            conversation, templates = expand(item["task"], item.get("text"), item["sample_id"], settings.seed)
            meta["templates"] = templates
    except (FileNotFoundError, ValueError, OSError) as exc:
        return _reject(item, str(exc), settings)
    row = {
        "sample_id": item["sample_id"],
        "task": item["task"],
        "source": item["source"],
        "split": item["split"],
        "conversation": conversation,
        "image": image,
        "poses": item.get("poses"),
        "betas": item.get("betas"),
        "caption": item.get("caption"),
        "label_source": item.get("label_source"),
        "meta": json.dumps(relative(meta, settings.raw_root), sort_keys=True),
    }
    reason = validate_row(row)
    if reason:
        return _reject({**item, "meta": meta}, f"{item['sample_id']}: {reason}", settings)
    row[INPUT_COLUMN] = item["input"]
    row[REASON_COLUMN] = None
    row[FILE_COLUMN] = relative(item.get("file"), settings.raw_root)
    return row


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=OUTPUT_SCHEMA)


def transform_batch(batch: pa.Table, settings: TransformSettings) -> pa.Table:
    """Ray Data ``map_batches`` function: JSON work items in, OUTPUT_SCHEMA records out, same order."""
    items = batch.column(ITEM_COLUMN).to_pylist()
    return to_table([transform_item(json.loads(text), settings) for text in items])
