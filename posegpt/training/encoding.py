"""Training rows encoded on Ray Data's CPU actors, so that a training step never decodes a JPEG.

With ``data.encode_on: ray_data`` every task's Dataset gets a ``map_batches`` stage
run by a pool of ``RowEncoder`` actors (``ActorPoolStrategy``, ``data.encode_cpus``
each). An actor builds the collator once, from the base model folder's tokenizer,
image processor and config (no language-model weights), and turns shard rows into
encoded rows: token ids, labels, ``<POSE>`` positions, pose targets and float32
pixel arrays (``ENCODED_SCHEMA``). The training worker only pads and stacks them
(``stack_records`` → ``Collator.stack``).

The row count never changes: a row that cannot be encoded comes out with
``encode_error`` set and its ``sample_id``, so the mixer's stream positions count it
like any other row, and the worker stops training naming it (``guard``'s
``bad_batch``), exactly as when the worker's own collate fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from posegpt.body.skeleton import POSE_DIM
from posegpt.model.collate import Collator, EncodedRow
from posegpt.model.config import PoseGPTModelConfig
from posegpt.model.conversation import Encoded
from posegpt.storage import StorageConfig, is_s3

PIXEL_KEYS: tuple[str, ...] = ("pixel_values", "pose_pixel_values")
"""Pixel inputs an encoded row may carry (each a (3, H, W) float32 array)."""

ENCODED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("encode_error", pa.string()),
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("pose_positions", pa.list_(pa.int32())),
        ("poses", pa.list_(pa.float32())),
        ("pose_input_positions", pa.list_(pa.int32())),
        ("pose_inputs", pa.list_(pa.float32())),
        *[(key, pa.binary()) for key in PIXEL_KEYS],
        *[(f"{key}_shape", pa.list_(pa.int32())) for key in PIXEL_KEYS],
    ]
)
"""Columns of an encoded row: ``poses`` (targets of ``<POSE>``) and ``pose_inputs`` (poses given by
``<POSE_IN>``) are flattened (n x 72); pixels are the array's float32 bytes (C order) with its shape,
null for a row without an image."""

_CARRIED = {
    EncodedRow: {"encoded", "poses", "pixels", "pose_inputs"},
    Encoded: {"input_ids", "labels", "pose_token_positions", "image_span", "pose_input_positions"},
}
"""Fields of the encoded-row classes this module knows how to carry (``image_span`` is used only
while truncating, before a row leaves the actor)."""

WEIGHT_SUFFIXES: tuple[str, ...] = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".gguf",
    ".h5",
    ".msgpack",
)
"""Files of a base model folder an encoding actor never needs."""


class RowEncodingError(ValueError):
    """Rows of a batch that the encoding actors could not encode (their messages name the samples)."""

    def __init__(self, messages: Sequence[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = list(messages)


def check_carried_fields() -> None:
    """Fail when the collator's encoded rows gained a field this module would silently leave out."""
    for cls, known in _CARRIED.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        if fields != known:
            raise TypeError(
                f"{cls.__module__}.{cls.__name__} has fields {sorted(fields)} but posegpt.training.encoding "
                f"carries {sorted(known)}: add the new ones to ENCODED_SCHEMA, to_record and from_record"
            )


# -- the collator without the language model ------------------------------------------------


def processor_dir(model: PoseGPTModelConfig, cache_dir: str | Path, storage: StorageConfig | None) -> Path:
    """A local folder with the base model's tokenizer, processor and config (weights not fetched from S3).

    From S3 the files are fetched at every call (an actor start): they are a few MB, and a cached
    copy could outlive a changed tokenizer.
    """
    from posegpt.model.loading import resolve_base_dir

    if not is_s3(model.base_model):
        return resolve_base_dir(model, cache_dir, storage)
    from posegpt.storage import arrow_filesystem, split_s3

    bucket, key = split_s3(model.base_model)
    digest = hashlib.sha1(model.base_model.encode()).hexdigest()[:16]
    local = Path(cache_dir) / "s3-processor" / f"{(key.rstrip('/').rsplit('/', 1)[-1] or bucket)}-{digest}"
    fs, root = arrow_filesystem(model.base_model, storage)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = [i for i in infos if i.type == pafs.FileType.File and not i.path.endswith(WEIGHT_SUFFIXES)]
    if not files:
        raise FileNotFoundError(f"no files under {model.base_model}")
    for info in files:
        target = local / info.path[len(root) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Several actors of a node may fetch at once: each writes its own file, the rename is atomic.
        with (
            fs.open_input_stream(info.path) as src,
            tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=f".{target.name}.", delete=False
            ) as partial,
        ):
            partial.write(src.read())
        Path(partial.name).replace(target)
    return local


def encoding_collator(
    model: PoseGPTModelConfig, cache_dir: str | Path, storage: StorageConfig | None = None
) -> Collator:
    """The collator ``Collator.for_model`` gives for a model of ``model``, built without its weights.

    The tokenizer gets ``<POSE>`` (then ``<POSE_IN>`` when the model reads poses) as
    ``posegpt.model.posegpt_model.assemble`` adds them; the image-token count comes from the
    LLaVA config and, with a pose encoder, from the encoder's shape (built on the meta device:
    no memory, no weights).
    """
    import torch
    from transformers import LlavaConfig

    from posegpt.model.loading import load_processor, pose_token_id
    from posegpt.model.posegpt_model import check_processor
    from posegpt.model.vision_input import num_image_tokens

    model.validate()
    folder = processor_dir(model, cache_dir, storage)
    processor = load_processor(folder)
    llava = LlavaConfig.from_pretrained(folder, local_files_only=True)
    check_processor(processor, llava)
    tokenizer = processor.tokenizer
    new_ids = {}
    for token in [model.pose_token] + ([model.pose_input_token] if model.pose_input_tokens else []):
        tokenizer.add_special_tokens({"extra_special_tokens": [token]}, replace_extra_special_tokens=False)
        new_ids[token] = pose_token_id(tokenizer, token, str(folder))
    tokens = num_image_tokens(llava)
    if model.pose_encoder.enabled:
        from posegpt.vision.pose_encoder import PoseEncoder

        with torch.device("meta"):
            pose_tokens = PoseEncoder(model.pose_encoder).num_tokens
        tokens = tokens * (model.pose_encoder.mode == "append") + pose_tokens
    return Collator(
        processor,
        pose_token_id=new_ids[model.pose_token],
        image_token_id=int(llava.image_token_id),
        num_image_tokens=tokens,
        system_prompt=model.system_prompt,
        max_length=min(model.max_length, int(llava.text_config.max_position_embeddings)),
        pose_encoder=model.pose_encoder,
        pose_input_token_id=new_ids.get(model.pose_input_token) if model.pose_input_tokens else None,
        num_pose_input_tokens=model.pose_input_tokens,
    )


def collator_signature(collator: Collator) -> dict[str, Any]:
    """What decides a collator's output, for comparing the actors' collator with the model's.

    Every attribute but the processor objects, the tokenizer as its size and added tokens, and
    the pose encoder's settings without the weights' path and digest (which pixels do not use).
    """
    out: dict[str, Any] = {}
    for name, value in vars(collator).items():
        if name in ("processor", "tokenizer"):
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {k: v for k, v in dataclasses.asdict(value).items() if k not in ("weights", "sha256")}
        out[name] = value
    out["vocab_size"] = len(collator.tokenizer)
    out["added_tokens"] = dict(sorted(collator.tokenizer.get_added_vocab().items()))
    out["image_processor"] = collator.processor.image_processor.to_dict()
    return out


def check_same_encoding(model_collator: Collator, actor_collator: Collator) -> None:
    """The actors must encode rows as the model's own collator would; name what differs."""
    a, b = collator_signature(model_collator), collator_signature(actor_collator)
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if diff:
        details = ", ".join(f"{k}: model {a.get(k)!r} vs actors {b.get(k)!r}" for k in diff)
        raise RuntimeError(
            "the Ray Data encoding actors' collator differs from the model's "
            f"({details[:2000]}); use data.encode_on=worker or fix posegpt.training.encoding.encoding_collator"
        )


# -- rows as columns -------------------------------------------------------------------------


def to_record(row: EncodedRow, sample_id: str | None) -> dict[str, Any]:
    """An encoded row as a dict of ``ENCODED_SCHEMA`` columns."""
    unknown = sorted(set(row.pixels) - set(PIXEL_KEYS))
    if unknown:
        raise ValueError(f"sample {sample_id}: pixel inputs {unknown} are not among {list(PIXEL_KEYS)}")
    out: dict[str, Any] = {
        "sample_id": sample_id,
        "encode_error": None,
        "input_ids": row.encoded.input_ids,
        "labels": row.encoded.labels,
        "pose_positions": row.encoded.pose_token_positions,
        "poses": _flat(row.poses),
        "pose_input_positions": row.encoded.pose_input_positions,
        "pose_inputs": _flat(row.pose_inputs),
    }
    for key in PIXEL_KEYS:
        value = row.pixels.get(key)
        out[key] = None if value is None else np.ascontiguousarray(value, dtype=np.float32).tobytes()
        out[f"{key}_shape"] = None if value is None else list(value.shape)
    return out


def error_record(sample_id: str | None, message: str) -> dict[str, Any]:
    """The row that stands for one the actor could not encode (counted, and stopped on by the worker)."""
    return {name: None for name in ENCODED_SCHEMA.names} | {"sample_id": sample_id, "encode_error": message}


def from_record(record: Mapping[str, Any]) -> EncodedRow:
    """An ``EncodedRow`` back from its columns (``to_record``'s inverse)."""
    poses = _unflat(record["poses"])
    pixels = {}
    for key in PIXEL_KEYS:
        data = record.get(key)
        if data is not None:
            pixels[key] = np.frombuffer(data, dtype=np.float32).reshape(record[f"{key}_shape"])
    encoded = Encoded(
        list(record["input_ids"]),
        list(record["labels"]),
        list(record["pose_positions"]),
        pose_input_positions=list(record["pose_input_positions"]),
    )
    return EncodedRow(encoded, poses, pixels, _unflat(record["pose_inputs"]))


def _flat(poses: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(poses).astype(np.float32) if poses else np.zeros(0, np.float32)


def _unflat(values: Sequence[float]) -> list[np.ndarray]:
    return list(np.asarray(values, dtype=np.float32).reshape(-1, POSE_DIM))


def encode_records(collator: Collator, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Shard rows → an ``ENCODED_SCHEMA`` table, one row out per row in, failures as error rows."""
    records = []
    for i, row in enumerate(rows):
        sample_id = row.get("sample_id")
        try:
            records.append(to_record(collator.encode_row(row, i), sample_id))
        except Exception as exc:  # any failure is this row's, reported by the worker
            message = f"{type(exc).__name__}: {exc}"
            if f"sample {sample_id}" not in message:
                message = f"sample {sample_id}: {message}"
            records.append(error_record(sample_id, message))
    return pa.Table.from_pylist(records, schema=ENCODED_SCHEMA)


def stack_records(collator: Collator, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A training batch of encoded rows; ``RowEncodingError`` when the actors failed on any of them."""
    errors = [str(r["encode_error"]) for r in records if r.get("encode_error") is not None]
    if errors:
        raise RowEncodingError(errors)
    return collator.stack([from_record(r) for r in records])


# -- the Ray Data stage ----------------------------------------------------------------------


class RowEncoder:
    """``map_batches`` callable class: each actor builds its collator once, then encodes batches."""

    def __init__(self, model: dict[str, Any], cache_dir: str, storage: dict[str, Any] | None) -> None:
        from posegpt.config import from_dict
        from posegpt.runtime import setup_environment

        # Before transformers is imported: offline hub, caches inside the project's cache folder.
        setup_environment(cache_dir)
        import torch

        # The actor holds a fraction of a CPU; more threads would only wait for time slices.
        torch.set_num_threads(1)
        check_carried_fields()
        self.collator = encoding_collator(
            from_dict(PoseGPTModelConfig, model),
            cache_dir,
            from_dict(StorageConfig, storage) if storage is not None else None,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return encode_records(self.collator, batch.to_pylist())


def encode_dataset(
    dataset: Any,
    model: PoseGPTModelConfig,
    cache_dir: str,
    storage: StorageConfig | None,
    *,
    actors: int,
    cpus: float,
    batch_size: int,
) -> Any:
    """``dataset`` with the encoding stage on a fixed pool of ``actors`` CPU actors."""
    import ray.data

    from posegpt.config import to_dict

    return dataset.map_batches(
        RowEncoder,
        fn_constructor_kwargs={
            "model": to_dict(model),
            "cache_dir": cache_dir,
            "storage": to_dict(storage) if storage is not None else None,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        udf_modifying_row_count=False,
    )
