"""PoseFix reader: pairs, in-sequence orientation, label selection, rejects."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext
from pipelines.sources.posefix import read
from pipelines.transforms import TransformSettings, transform_item
from posegpt.data.templates import stable_hash
from tests.pipelines.sources.raw_files import amass_sequence, posefix_release

ENTRIES = {
    0: ("BioMotionLab_NTroje/s1/a_poses.npz", 1),  # stored under the new name BMLrub
    1: ("BioMotionLab_NTroje/s1/a_poses.npz", 4),
    2: ("CMU/02/b_poses.npz", 0),
    3: ("MPI_HDM05/x/missing_poses.npz", 0),
    4: ("CMU/02/b_poses.npz", 2),
    5: ("CMU/02/b_poses.npz", 9),  # the sequence has 3 frames
    6: ("CMU/03/nan_poses.npz", 0),
}
PAIRS = [[0, 1], [0, 2], [1, 3], [2, 99], "broken", [2, 4], [4, 5], [6, 2], [4, 2]]
SPLITS = {"train": ([0], [1, 2, 3, 4, 5, 6, 7]), "val": ([], [8, 12]), "test": ([], [])}
HUMAN = {0: "Raise the left arm.", 1: ["", "Bend both knees."], 7: "Stand up straight."}
PARAPHRASES = {0: ["Lift your left arm."], 8: "Turn the head to the right."}
AUTO = {1: "auto one", 8: ["auto eight a", "auto eight b"], 42: "a modifier of no pair"}


@pytest.fixture
def raw(tmp_path: Path) -> dict:
    a_path = tmp_path / "amass" / "BMLrub" / "s1" / "a_poses.npz"
    a = amass_sequence(a_path, 6, 30.0, seed=1)
    # The person turns by 45° between the frames of in-sequence pair 0, so its correction matters.
    a[4, :3] = (
        Rotation.from_euler("z", 75, degrees=True) * Rotation.from_euler("xy", [80, 10], degrees=True)
    ).as_rotvec()
    np.savez(a_path, **{**dict(np.load(a_path)), "poses": a})
    b = amass_sequence(tmp_path / "amass" / "CMU" / "02" / "b_poses.npz", 3, -60.0, seed=2)
    nan_path = tmp_path / "amass" / "CMU" / "03" / "nan_poses.npz"
    amass_sequence(nan_path, 2, 0.0, seed=3)
    arrays = dict(np.load(nan_path))
    arrays["poses"][0, 10] = np.nan
    np.savez(nan_path, **arrays)
    posefix_release(tmp_path, ENTRIES, PAIRS, SPLITS, HUMAN, PARAPHRASES, AUTO)
    return {"root": tmp_path, "a": a, "b": b}


def items(root: Path, part: dict | None = None, all_captions: bool = False) -> list[dict]:
    ctx = ReadContext(str(root), seed=0, all_captions=all_captions)
    source = SourceConfig(reader="posefix", path="posefix", amass_root="amass", dataset="posefix")
    return list(read("pf", source, ctx, part))


def camera_root(rotvec: np.ndarray) -> Rotation:
    """DESIGN.md's conversion, written with scipy: zero the z angle of R = Rz·Ry·Rx, then Rx(+90°)."""
    r = Rotation.from_rotvec(rotvec)
    yaw = r.as_euler("ZYX")[0]
    return Rotation.from_euler("x", 90, degrees=True) * Rotation.from_euler("z", -yaw) * r


def test_pairs_give_edit_and_diff_rows_with_both_poses(raw) -> None:
    out = items(raw["root"])
    rows = {i["sample_id"]: i for i in out if "reject" not in i}
    # Pair 7 reads fine (its NaN is caught by validation, below).
    assert set(rows) == {f"posefix:{p}:{s}" for p in (0, 1, 7, 8) for s in ("edit", "diff")}
    edit, diff = rows["posefix:0:edit"], rows["posefix:0:diff"]
    assert edit["task"] == "poseedit" and diff["task"] == "posediff" and edit["split"] == "train"
    assert edit["text"] == diff["text"] == HUMAN[0] and edit["label_source"] == "human"
    assert edit["meta"]["pose_inputs"] == [0] and diff["meta"]["pose_inputs"] == [0, 1]
    assert edit["meta"]["in_sequence"] and not rows["posefix:1:edit"]["meta"]["in_sequence"]
    # The empty human modifier is a reject and never chosen; the other human one wins over the automatic one.
    assert rows["posefix:1:edit"]["text"] == "Bend both knees."
    # No human modifier: one machine one (paraphrase or automatic), seeded by the pair id.
    pool = ["Turn the head to the right.", "auto eight a", "auto eight b"]
    pick = pool[random.Random(stable_hash("posefix:8")).randrange(3)]
    assert rows["posefix:8:diff"]["text"] == pick and rows["posefix:8:diff"]["label_source"] == "auto"
    assert rows["posefix:8:diff"]["split"] == "val"


def test_poses_follow_the_frame_convention_and_in_sequence_pairs_keep_their_turn(raw) -> None:
    rows = {i["sample_id"]: i for i in items(raw["root"]) if "reject" not in i}
    a, b = raw["a"], raw["b"]
    pose_a, pose_b = (np.asarray(p) for p in rows["posefix:0:edit"]["poses"])
    np.testing.assert_allclose(pose_a[3:66], a[1, 3:66], atol=1e-6)
    np.testing.assert_allclose(pose_b[3:66], a[4, 3:66], atol=1e-6)
    assert np.all(pose_a[66:] == 0) and np.all(pose_b[66:] == 0)
    ra, rb = Rotation.from_rotvec(pose_a[:3]), Rotation.from_rotvec(pose_b[:3])
    assert (ra * camera_root(a[1, :3]).inv()).magnitude() < 1e-5
    # In-sequence: B turned by A's correction, so the relative rotation of the two roots is AMASS's.
    rel_raw = Rotation.from_rotvec(a[1, :3]).inv() * Rotation.from_rotvec(a[4, :3])
    assert ((ra.inv() * rb) * rel_raw.inv()).magnitude() < 1e-5
    assert (rb * camera_root(a[4, :3]).inv()).magnitude() > 0.5  # not B's own correction
    # Out-of-sequence: each pose gets its own correction.
    pose_b1 = np.asarray(rows["posefix:1:edit"]["poses"][1])
    assert (Rotation.from_rotvec(pose_b1[:3]) * camera_root(b[0, :3]).inv()).magnitude() < 1e-5


def test_bad_rows_are_rejects_naming_the_problem(raw) -> None:
    out = items(raw["root"])
    reasons = [i["reject"] for i in out if "reject" in i]
    expect = [
        "not found",  # pair 2: pose 3's AMASS file is missing
        "pose ids [99] have no AMASS entry",  # pair 3
        "is not [pose A id, pose B id]",  # pair 4
        "pair id 5 has no modifier",
        "has 3 frames, frame 9 requested",  # pair 6
        "pair id 12 of",  # a split lists a pair that does not exist
        "empty modifier for pair id 1",
        "unknown pair id 42",
    ]
    for text in expect:
        assert sum(text in r for r in reasons) == 1, (text, reasons)
    assert len(reasons) == len(expect)
    # A NaN in the AMASS frame: the row is read, then validation rejects both tasks' rows.
    settings = TransformSettings()
    nan_rows = [i for i in out if i.get("sample_id", "").startswith("posefix:7:")]
    assert len(nan_rows) == 2
    for item in nan_rows:
        (record,) = transform_item(item, settings)
        assert "non-finite" in record["_reason"] and record["sample_id"] == item["sample_id"]
    good = [transform_item(i, settings)[0] for i in out if i.get("sample_id") == "posefix:0:edit"]
    assert good[0]["_reason"] is None and good[0]["conversation"][0]["content"].count("<POSE_IN>") == 1


def test_parts_partition_the_source(raw) -> None:
    whole = items(raw["root"])
    parts = [items(raw["root"], {"stride": 3, "offset": k}) for k in range(3)]
    key = lambda i: (i.get("sample_id"), i.get("reject"))  # noqa: E731
    assert sorted(map(key, whole), key=str) == sorted((key(i) for p in parts for i in p), key=str)


def test_all_captions_makes_a_row_per_modifier(raw) -> None:
    rows = {i["sample_id"] for i in items(raw["root"], all_captions=True) if "reject" not in i}
    assert {"posefix:0:0:edit", "posefix:0:1:edit", "posefix:8:2:diff"} <= rows


def test_tasks_pick_the_rows_and_are_checked_against_the_reader(raw) -> None:
    from pipelines.prepare_config import PrepareConfig
    from posegpt.config import ConfigError

    ctx = ReadContext(str(raw["root"]), seed=0)
    source = SourceConfig(reader="posefix", path="posefix", amass_root="amass", tasks=["posediff"])
    rows = [i for i in read("pf", source, ctx) if "reject" not in i]
    assert rows and {i["task"] for i in rows} == {"posediff"}
    bad = PrepareConfig(
        raw_root=str(raw["root"]), sources={"pf": SourceConfig(**{**source.__dict__, "tasks": ["text2pose"]})}
    )
    with pytest.raises(ConfigError, match="not tasks of reader posefix"):
        bad.validate()
