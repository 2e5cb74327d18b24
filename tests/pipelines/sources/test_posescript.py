"""PoseScript reader: both release layouts, label selection, rejects."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext
from pipelines.sources.posescript import read
from posegpt.data.templates import stable_hash
from tests.pipelines.sources.raw_files import amass_sequence, posescript_v1, posescript_v2

ENTRIES = {
    0: ("BioMotionLab_NTroje/s1/a_poses.npz", 1),  # stored under the new name BMLrub
    1: ("BioMotionLab_NTroje/s1/a_poses.npz", 4),
    2: ("CMU/02/b_poses.npz", 0),
    3: ("MPI_HDM05/x/missing_poses.npz", 0),  # no such file
    4: ("CMU/02/b_poses.npz", 2),
}
HUMAN = {0: "The person stands with arms up.", 4: ["Two human words.", "Another human caption."]}
AUTO = {
    0: ["auto zero a", "auto zero b", "auto zero c"],
    1: ["auto one a", "auto one b", "auto one c"],
    2: ["auto two a", "", "auto two c"],
    3: ["auto three a", "auto three b", "auto three c"],
    4: ["auto four a", "auto four b", "auto four c"],
    99: ["caption of a pose that does not exist", "x", "y"],
}
SPLITS = {"train": [0, 1, 2, 3], "val": [4], "test": []}


@pytest.fixture
def raw(tmp_path: Path) -> dict:
    a = amass_sequence(tmp_path / "amass" / "BMLrub" / "s1" / "a_poses.npz", 6, 30.0, seed=1)
    b = amass_sequence(tmp_path / "amass" / "CMU" / "02" / "b_poses.npz", 3, -60.0, seed=2)
    posescript_v2(tmp_path, ENTRIES, SPLITS, HUMAN, AUTO)
    posescript_v1(tmp_path, ENTRIES, SPLITS, HUMAN, AUTO)
    return {"root": tmp_path, "a": a, "b": b}


def items(root: Path, path: str = "posescript", all_captions: bool = False, seed: int = 0) -> list[dict]:
    ctx = ReadContext(str(root), seed=seed, all_captions=all_captions)
    return list(
        read(
            "ps", SourceConfig(reader="posescript", path=path, amass_root="amass", dataset="posescript"), ctx
        )
    )


def auto_pick(pid: int, captions: list[str], seed: int = 0) -> str:
    rng = random.Random(seed + stable_hash(f"posescript:{pid}"))
    return captions[rng.randrange(len(captions))]


@pytest.mark.parametrize("layout", ["posescript", "posescript_v1"])
def test_both_layouts_give_the_same_rows(raw, layout) -> None:
    out = items(raw["root"], layout)
    rows = {i["sample_id"]: i for i in out if "reject" not in i}
    rejects = [i for i in out if "reject" in i]
    assert set(rows) == {"posescript:0", "posescript:1", "posescript:2", "posescript:4"}
    assert rows["posescript:0"]["caption"] == HUMAN[0] and rows["posescript:0"]["label_source"] == "human"
    assert rows["posescript:4"]["label_source"] == "human" and rows["posescript:4"]["split"] == "val"
    assert (
        rows["posescript:1"]["caption"] == auto_pick(1, AUTO[1])
        and rows["posescript:1"]["label_source"] == "auto"
    )
    # The empty automatic caption is a reject and never chosen.
    assert rows["posescript:2"]["caption"] == auto_pick(2, ["auto two a", "auto two c"])
    reasons = [r["reject"] for r in rejects]
    assert any("unknown pose id 99" in r for r in reasons)
    assert any("empty caption for pose id 2" in r for r in reasons)
    missing = [r for r in reasons if "pose id 3" in r]
    assert len(missing) == 1 and "missing_poses.npz" in missing[0] and "not found" in missing[0]
    # Frame conventions: frame 4 of the sequence stored under BMLrub, SMPL-H → SMPL.
    pose = np.asarray(rows["posescript:1"]["poses"][0])
    np.testing.assert_allclose(pose[3:66], raw["a"][4, 3:66], atol=1e-6)
    np.testing.assert_array_equal(pose[66:], 0.0)
    assert rows["posescript:1"]["meta"]["amass"].endswith("amass/BMLrub/s1/a_poses.npz")


def test_selection_is_seeded_per_pose_id(raw) -> None:
    a = {i["sample_id"]: i.get("caption") for i in items(raw["root"], seed=0)}
    assert a == {i["sample_id"]: i.get("caption") for i in items(raw["root"], seed=0)}
    picks = {seed: items(raw["root"], seed=seed) for seed in range(12)}
    captions = {
        next(i["caption"] for i in out if i.get("sample_id") == "posescript:1") for out in picks.values()
    }
    assert len(captions) > 1 and captions <= set(AUTO[1])


def test_all_captions_emits_one_row_per_caption(raw) -> None:
    out = [i for i in items(raw["root"], all_captions=True) if "reject" not in i]
    ids = [i["sample_id"] for i in out]
    assert ids.count("posescript:0:0") == 1
    zero = sorted((i["sample_id"], i["caption"], i["label_source"]) for i in out if i["meta"]["pose_id"] == 0)
    assert zero == [
        ("posescript:0:0", HUMAN[0], "human"),
        ("posescript:0:1", "auto zero a", "auto"),
        ("posescript:0:2", "auto zero b", "auto"),
        ("posescript:0:3", "auto zero c", "auto"),
    ]
    assert len([i for i in out if i["meta"]["pose_id"] == 4]) == 5
    assert len(set(ids)) == len(ids)


def test_missing_ids_file_is_one_reject(tmp_path) -> None:
    (tmp_path / "posescript").mkdir()
    out = items(tmp_path)
    assert len(out) == 1 and "neither" in out[0]["reject"]


def test_pose2text_rows_describe_the_same_pose_with_the_same_caption(raw) -> None:
    from pipelines.transforms import TransformSettings, transform_item

    ctx = ReadContext(str(raw["root"]), seed=0)
    source = SourceConfig(
        reader="posescript",
        path="posescript",
        amass_root="amass",
        dataset="posescript",
        tasks=["text2pose", "pose2text"],
    )
    out = [i for i in read("ps", source, ctx) if "reject" not in i]
    plain = {i["sample_id"]: i for i in items(raw["root"]) if "reject" not in i}
    text = {i["sample_id"]: i for i in out if i["task"] == "text2pose"}
    described = {i["sample_id"]: i for i in out if i["task"] == "pose2text"}
    assert set(text) == set(plain) and set(described) == {f"{s}:describe" for s in plain}
    for sid, row in plain.items():
        twin = described[f"{sid}:describe"]
        assert twin["caption"] == row["caption"] and twin["poses"] == row["poses"]
        assert twin["label_source"] == row["label_source"] and twin["meta"]["pose_inputs"] == [0]
        (record,) = transform_item(twin, TransformSettings())
        assert record["_reason"] is None
        assert record["conversation"][0]["content"].count("<POSE_IN>") == 1
        assert record["conversation"][1]["content"] == row["caption"]
