"""The prepare pipeline end to end: every reject path, counts, determinism, schema, Ray vs local, S3."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.prepare import PrepareError, prepare
from pipelines.prepare_config import PrepareConfig
from pipelines.writer import OutputExistsError
from posegpt.config import load_config
from posegpt.data.crops import crop_box, encode_jpeg
from posegpt.data.schema import QA_SCHEMA, REJECT_SCHEMA, validate_row
from tests.pipelines.sources.raw_files import amass_sequence, jpeg, posescript_v2, spin_npz, write_json

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC_PRESET = REPO / "configs" / "prepare" / "synthetic.yaml"


def bad_world(root: Path) -> Path:
    """A small raw tree with one of every kind of bad input next to good rows."""
    amass_sequence(root / "amass" / "BMLrub" / "s" / "a_poses.npz", 4, 15.0, seed=1)
    posescript_v2(
        root,
        {
            0: ("BioMotionLab_NTroje/s/a_poses.npz", 0),
            1: ("BioMotionLab_NTroje/s/a_poses.npz", 2),
            2: ("CMU/missing/gone_poses.npz", 0),
        },
        {"train": [0, 1, 2], "val": [], "test": []},
        {0: "The person stands."},
        {0: ["auto a"], 1: ["   "], 2: ["auto c"], 42: ["caption of an unknown pose"]},
    )
    for i in range(3):
        jpeg(root / "spin" / "images" / f"{i}.jpg", seed=i)
    (root / "spin" / "images" / "corrupt.jpg").write_bytes(
        (root / "spin" / "images" / "0.jpg").read_bytes()[:300]
    )
    pose = np.random.default_rng(0).normal(0, 0.2, (5, 72))
    pose[2, 7] = math.nan
    spin_npz(
        root / "spin" / "train.npz",
        ["images/0.jpg", "images/1.jpg", "images/2.jpg", "images/nowhere.jpg", "images/corrupt.jpg"],
        [[48, 40], [10, 10], [48, 40], [48, 40], [48, 40]],
        [0.3, 0.2, 0.3, 0.3, 0.3],
        pose,
    )
    truncated = spin_npz(root / "hmr2" / "train.npz", ["images/0.jpg"] * 3, [[1, 1]] * 3, [1.0] * 3, pose[:3])
    truncated.write_bytes(truncated.read_bytes()[:200])
    jpeg(root / "coco" / "9.jpg", seed=9, size=(64, 48))
    write_json(
        root / "llava" / "mix.json",
        [
            {
                "id": "img",
                "image": "coco/9.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is it?"},
                    {"from": "gpt", "value": "Noise."},
                ],
            },
            {
                "id": "text",
                "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
            },
        ],
    )
    return root


def bad_config(root: Path, out: str, *extra: str) -> PrepareConfig:
    overrides = [
        f"raw_root={root}",
        f"out={out}",
        "engine=local",
        "image_size=32",
        "rows_per_file=2",
        "tracking.enabled=false",
        "max_reject_fraction=0.9",
        "sources.ps.reader=posescript",
        "sources.ps.path=posescript",
        "sources.ps.amass_root=amass",
        "sources.ps.dataset=posescript",
        "sources.spin.reader=spin",
        "sources.spin.path=spin",
        "sources.spin.splits=[train]",
        "sources.hmr2.reader=hmr2",
        "sources.hmr2.path=hmr2",
        "sources.hmr2.splits=[train]",
        "sources.llava.reader=llava",
        "sources.llava.path=llava/mix.json",
        *extra,
    ]
    return load_config(PrepareConfig, None, overrides)


def read_dir(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_every_bad_input_is_a_named_reject_and_counts_add_up(tmp_path: Path) -> None:
    root = bad_world(tmp_path / "raw")
    out = tmp_path / "shards"
    result = prepare(bad_config(root, str(out)))

    rejects = read_dir(out / "rejects")
    reasons = [r["reason"] for r in rejects]

    def one(*fragments: str) -> dict:
        hits = [r for r in rejects if all(f in r["reason"] for f in fragments)]
        assert len(hits) == 1, (fragments, reasons)
        return hits[0]

    one("unknown pose id 42", "posescript_auto_100k.json")
    one("empty caption for pose id 1")
    one("pose id 2", "CMU/missing/gone_poses.npz", "not found")
    one("image not found", "spin/images/nowhere.jpg")
    corrupt = one("spin/images/corrupt.jpg")
    assert ("decode" in corrupt["reason"] or "not a readable image" in corrupt["reason"]) and corrupt[
        "file"
    ] == "spin/train.npz"
    nan = one("non-finite")
    assert nan["sample_id"] == "spin:spin/images/2.jpg:2"
    one("hmr2/train.npz", "npz")
    assert len(rejects) == 7
    # Reasons name raw files relative to raw_root, never the machine's own folders.
    assert not [r for r in reasons if str(root) in r or str(tmp_path) in r]

    # read = accepted + rejected, per source and in total, and equal to what was written.
    stats = result.per_input
    assert stats == {
        "ps": {"read": 4, "accepted": 1, "rejected": 3},
        "spin": {"read": 5, "accepted": 2, "rejected": 3},
        "hmr2": {"read": 1, "accepted": 0, "rejected": 1},
        "llava": {"read": 2, "accepted": 2, "rejected": 0},
    }
    rows = [r for task in ("text2pose", "image2pose", "vqa") for r in read_dir(out / task / "train")]
    assert result.accepted == len(rows) == 5 and result.rejected == len(rejects)
    assert result.read == 12 and "total read=12 accepted=5 rejected=7" in result.summary_line()
    assert result.manifest["counts"] == {
        "image2pose": {"train": 2},
        "text2pose": {"train": 1},
        "vqa": {"train": 2},
    }
    assert result.manifest["rejects"] == 7 and result.manifest["schema_version"] == 1
    assert (
        "posescript/ids_2_dataset_sequence_and_frame_index_100k.json"
        in result.manifest["sources"]["ps"]["files"]
    )
    assert f"ps read={stats['ps']['read']}" in result.summary_line()
    for r in rows:
        assert validate_row(r) is None
    # The crop of the good SPIN row is crop_box + encode_jpeg of its image (center, scale × 200).
    crop_row = next(r for r in rows if r["sample_id"] == "spin:spin/images/0.jpg:0")
    from PIL import Image

    pixels = np.asarray(Image.open(root / "spin" / "images" / "0.jpg").convert("RGB"))
    assert crop_row["image"] == encode_jpeg(crop_box(pixels, (48, 40), 60.0, 1.0, 32), 90)
    assert json.loads(crop_row["meta"])["file"] == "spin/train.npz"


def test_shards_open_with_plain_pyarrow_and_match_the_schema(tmp_path: Path) -> None:
    root = bad_world(tmp_path / "raw")
    out = tmp_path / "shards"
    prepare(bad_config(root, str(out)))
    files = sorted(out.glob("*/*/part-*.parquet"))
    assert files and all(pq.read_schema(f).equals(QA_SCHEMA) for f in files)
    assert pq.read_schema(next((out / "rejects").glob("*.parquet"))).equals(REJECT_SCHEMA)
    # rows_per_file=2, and a file holds the rows of one read part (named part-<part>-<first item>).
    sizes = {f.name: pq.read_metadata(f).num_rows for f in sorted((out / "rejects").glob("*.parquet"))}
    assert sum(sizes.values()) == 7 and max(sizes.values()) == 2
    per_part: dict[str, int] = {}
    for name, n in sizes.items():
        per_part[name.split("-")[1]] = per_part.get(name.split("-")[1], 0) + n
    assert len(sizes) == sum(math.ceil(n / 2) for n in per_part.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(pq.read_metadata(f).num_rows for f in files) == manifest["rows"] == 5


def test_same_inputs_same_bytes_and_no_silent_overwrite(tmp_path: Path) -> None:
    root = bad_world(tmp_path / "raw")
    a, b = tmp_path / "a", tmp_path / "b"
    prepare(bad_config(root, str(a)))
    prepare(bad_config(root, str(b)))
    names = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert names == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for name in names:
        assert pq.read_table(a / name).equals(pq.read_table(b / name))
    assert (a / "manifest.json").read_text() == (b / "manifest.json").read_text()
    with pytest.raises(OutputExistsError, match="overwrite=true"):
        prepare(bad_config(root, str(a)))
    (a / "image2pose" / "val").mkdir()
    stale = a / "image2pose" / "val" / "part-00000.parquet"
    stale.write_bytes(b"stale")
    prepare(bad_config(root, str(a), "overwrite=true"))
    assert not stale.exists() and (a / "manifest.json").read_text() == (b / "manifest.json").read_text()


def test_missing_input_path_is_an_error_naming_it(tmp_path: Path) -> None:
    root = bad_world(tmp_path / "raw")
    cfg = bad_config(root, str(tmp_path / "out"), "sources.spin.path=nowhere")
    with pytest.raises(PrepareError, match=r"sources\.spin\.path = .*nowhere"):
        prepare(cfg)


@pytest.mark.slow
def test_ray_engine_writes_the_same_shards_as_the_local_loop(
    ray_local, synthetic_world: Path, prepared_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    cfg = load_config(
        PrepareConfig,
        SYNTHETIC_PRESET,
        [
            f"raw_root={synthetic_world}",
            f"out={out}",
            "engine=ray",
            "tracking.enabled=false",
            "progress_bars=false",
        ],
    )
    result = prepare(cfg)
    assert result.read == result.accepted + result.rejected and result.accepted > 1000
    names = sorted(p.relative_to(prepared_shards) for p in prepared_shards.rglob("*.parquet"))
    assert names == sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    for name in names:
        assert pq.read_table(out / name).equals(pq.read_table(prepared_shards / name)), name
    manifest = json.loads((out / "manifest.json").read_text())
    expected = json.loads((prepared_shards / "manifest.json").read_text())
    # The code digest names the code; the commit may move on between the fixture and this run.
    assert manifest.pop("code_version")["code_digest"] == expected.pop("code_version")["code_digest"]
    assert manifest == expected
    counts = result.manifest["counts"]
    # The synthetic preset also makes the pose-input tasks from the world's pose pairs and captions.
    assert set(counts) == {
        "text2pose",
        "image2pose",
        "vqa",
        "spg",
        "rpe",
        "pose2text",
        "posediff",
        "poseedit",
    }
    assert all(counts[t]["train"] > 0 for t in counts)


def test_s3_in_and_out(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    from posegpt.storage import StorageConfig, read_bytes, upload_dir

    storage = StorageConfig(endpoint_url=s3_endpoint)
    root = bad_world(tmp_path / "raw")
    upload_dir(root, f"{s3_bucket}/raw", storage)
    cfg = bad_config(
        root, f"{s3_bucket}/shards", f"raw_root={s3_bucket}/raw", f"storage.endpoint_url={s3_endpoint}"
    )
    result = prepare(cfg)
    local = prepare(bad_config(root, str(tmp_path / "local")))
    assert result.per_input == local.per_input
    assert result.manifest["counts"] == local.manifest["counts"]
    manifest = json.loads(read_bytes(f"{s3_bucket}/shards/manifest.json", storage))
    assert manifest["counts"] == local.manifest["counts"]
    assert manifest["sources"]["ps"]["files"] == local.manifest["sources"]["ps"]["files"]
    import pyarrow.fs as pafs

    fs, path = __import__("posegpt.storage", fromlist=["arrow_filesystem"]).arrow_filesystem(
        f"{s3_bucket}/shards/image2pose/train", storage
    )
    files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path)))
    s3_rows = [r for f in files for r in pq.read_table(f, filesystem=fs).to_pylist()]
    assert s3_rows == read_dir(tmp_path / "local" / "image2pose" / "train")


def test_template_variants_are_rows_of_one_item(tmp_path: Path) -> None:
    from posegpt.data.templates import TemplateConfig, expand_variants

    root = bad_world(tmp_path / "raw")
    one = prepare(bad_config(root, str(tmp_path / "one")))
    three = prepare(bad_config(root, str(tmp_path / "three"), "templates.variants=3", "rows_per_file=4"))
    # Counts are per read item: the same read / accepted / rejected whatever the number of phrasings.
    assert three.per_input == one.per_input
    rows = {r["sample_id"]: r for r in read_dir(tmp_path / "three" / "image2pose" / "train")}
    assert sorted(rows) == [f"spin:spin/images/{i}.jpg:{i}:{v}" for i in (0, 1) for v in range(3)]
    assert (
        three.manifest["counts"]["image2pose"]["train"]
        == 6
        == 3 * one.manifest["counts"]["image2pose"]["train"]
    )
    expected = expand_variants(
        "image2pose", None, "spin:spin/images/0.jpg:0", 0, TemplateConfig(variants=3), "train"
    )
    for sample_id, conversation, ids in expected:
        assert rows[sample_id]["conversation"] == conversation
        assert json.loads(rows[sample_id]["meta"])["templates"] == ids
    # vqa rows carry their own conversation: one row each.
    assert three.manifest["counts"]["vqa"] == one.manifest["counts"]["vqa"]
    files = list((tmp_path / "three").glob("*/*/*.parquet"))
    assert len({f.name for f in files if f.parent.name == "train"}) >= 1
    assert all(pq.read_metadata(f).num_rows <= 4 for f in files)
