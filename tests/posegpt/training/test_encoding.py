"""Rows encoded by the Ray Data stage: the same batches as the worker's collate, bad rows named, not lost."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from posegpt.model.collate import Collator
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.training.encoding import (
    RowEncoder,
    RowEncodingError,
    check_carried_fields,
    check_same_encoding,
    encode_records,
    encoding_collator,
    stack_records,
)
from tests.fixtures.model import mixed_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_model_config):
    from posegpt.model.posegpt_model import build_model

    torch.manual_seed(0)
    return build_model(tiny_model_config).eval()


@pytest.fixture(scope="module")
def encoder(tiny_model_config) -> RowEncoder:
    """The actor class itself, run in this process (what each Ray Data actor holds)."""
    from posegpt.config import to_dict

    return RowEncoder(to_dict(tiny_model_config), str(DEFAULT_CACHE_DIR), None)


def assert_same_batch(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        if value.is_floating_point():
            torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6)
        else:
            assert torch.equal(got[key], value), key


def corrupt(row: dict) -> dict:
    """The row with its image bytes cut short (a truncated PNG)."""
    return {**row, "image": row["image"][: len(row["image"]) // 3]}


def test_encoded_rows_carry_every_field_of_the_collators_rows() -> None:
    check_carried_fields()


def test_actors_collator_is_the_models(model, tiny_model_config) -> None:
    """The collator an actor builds from the base folder (no LM weights) matches ``Collator.for_model``."""
    check_same_encoding(Collator.for_model(model), encoding_collator(tiny_model_config, DEFAULT_CACHE_DIR))
    shorter = encoding_collator(dataclasses.replace(tiny_model_config, max_length=40), DEFAULT_CACHE_DIR)
    with pytest.raises(RuntimeError, match=r"max_length: model \d+ vs actors 40"):
        check_same_encoding(Collator.for_model(model), shorter)


def test_actor_encoded_batch_equals_the_worker_collated_batch(model, encoder) -> None:
    rows = mixed_rows(7)
    table = encoder(pa.Table.from_pylist(rows))
    assert table.num_rows == len(rows)
    assert table.column("sample_id").to_pylist() == [r["sample_id"] for r in rows]
    # The worker gets the rows as Ray Data hands them over: pyarrow tables turned into dicts.
    got = stack_records(Collator.for_model(model), table.to_pylist())
    assert_same_batch(got, Collator.for_model(model)(rows))
    assert "pose_pixel_values" in got and got["pixel_values"].shape[0] == sum(
        r["image"] is not None for r in rows
    )


def test_a_row_that_fails_encoding_is_kept_and_named(model, encoder) -> None:
    rows = mixed_rows(4)
    rows[2] = corrupt(rows[2])
    rows[1]["poses"] = None  # its answer has a <POSE> but no pose
    table = encoder(pa.Table.from_pylist(rows))
    assert table.num_rows == 4  # counted like any row: the stream positions stay exact
    ids, messages = table.column("sample_id").to_pylist(), table.column("encode_error").to_pylist()
    errors = dict(zip(ids, messages, strict=True))
    assert errors["t:0"] is None and errors["t:3"] is None
    assert errors["t:2"].startswith("ImageError: sample t:2: field image")
    assert "sample t:1" in errors["t:1"] and "<POSE>" in errors["t:1"]
    with pytest.raises(RowEncodingError, match="sample t:1") as info:
        stack_records(Collator.for_model(model), table.to_pylist())
    assert len(info.value.messages) == 2 and "sample t:2" in info.value.messages[1]


def test_a_row_without_a_sample_id_is_named_by_its_index(encoder) -> None:
    row = corrupt(mixed_rows(1)[0])
    del row["sample_id"]
    out = encode_records(encoder.collator, [row])
    assert out.column("sample_id").to_pylist() == [None]
    assert "row 0" in out.column("encode_error")[0].as_py()


@pytest.mark.slow
def test_ray_data_actors_encode_shard_rows_like_the_worker(
    ray_local, prepared_shards: Path, model, tiny_model_config, tmp_path: Path
) -> None:
    """The real stage on Ray Data's actor pool, over real shard rows with one corrupt JPEG."""
    import ray.data

    from posegpt.training.encoding import encode_dataset

    files = sorted((prepared_shards / "image2pose" / "train").glob("*.parquet"))
    rows = pq.read_table(files[0]).slice(0, 24).to_pylist()
    rows[5] = corrupt(rows[5])
    bad_id = rows[5]["sample_id"]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part.parquet")
    dataset = encode_dataset(
        ray.data.read_parquet(str(tmp_path / "part.parquet")),
        tiny_model_config,
        str(DEFAULT_CACHE_DIR),
        None,
        actors=1,
        cpus=0.5,
        batch_size=8,
    )
    out = {r["sample_id"]: r for r in dataset.take_all()}
    assert set(out) == {r["sample_id"] for r in rows}  # none dropped
    assert f"sample {bad_id}" in out[bad_id]["encode_error"]
    good = [r for r in rows if r["sample_id"] != bad_id]
    collate = Collator.for_model(model)
    got = stack_records(collate, [out[r["sample_id"]] for r in good])
    assert_same_batch(got, collate(good))
    assert np.isfinite(got["pixel_values"].numpy()).all()


def test_actors_fetch_only_the_processor_files_of_an_s3_base_model(
    s3_endpoint, tiny_base_dir: Path, tiny_model_config, model, tmp_path: Path
) -> None:
    """From ``s3://`` the actor's collator needs the tokenizer, processor and config, never the weights."""
    import uuid

    from posegpt.storage import StorageConfig, s3_client, upload_dir
    from posegpt.training.encoding import WEIGHT_SUFFIXES, processor_dir

    storage = StorageConfig(endpoint_url=s3_endpoint)
    bucket = f"base-{uuid.uuid4().hex[:8]}"
    s3_client(storage).create_bucket(Bucket=bucket)
    upload_dir(tiny_base_dir, f"s3://{bucket}/models/tiny-llava", storage)
    remote = dataclasses.replace(tiny_model_config, base_model=f"s3://{bucket}/models/tiny-llava")
    folder = processor_dir(remote, tmp_path / "cache", storage)
    fetched = {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}
    local = {p.relative_to(tiny_base_dir) for p in tiny_base_dir.rglob("*") if p.is_file()}
    assert fetched == {p for p in local if not p.name.endswith(WEIGHT_SUFFIXES)}
    assert any(p.name.endswith(WEIGHT_SUFFIXES) for p in local)  # the test would not notice otherwise
    check_same_encoding(Collator.for_model(model), encoding_collator(remote, tmp_path / "cache", storage))
