"""spg (implicit descriptions of PoseScript poses) and rpe (one described person of a group) readers."""

from __future__ import annotations

import numpy as np

from pipelines.prepare_config import SourceConfig
from pipelines.sources import get_reader
from pipelines.sources.inputs import ReadContext
from tests.pipelines.sources.raw_files import amass_sequence, posescript_v2, write_json


def test_spg_rows_take_poses_from_posescript_ids(tmp_path) -> None:
    seq = amass_sequence(tmp_path / "amass" / "HDM05" / "s" / "k_poses.npz", 4, 10.0, seed=3)
    posescript_v2(tmp_path, {5: ("MPI_HDM05/s/k_poses.npz", 2)}, {"train": [5]}, {}, {5: ["c"]})
    write_json(
        tmp_path / "spg" / "spg_train.json",
        [
            {"pose_id": 5, "activity": "proposing", "description": "A man  proposing marriage."},
            {"pose_id": 6, "activity": "x", "description": "unknown id"},
            {"pose_id": 5, "activity": "x", "description": "   "},
        ],
    )
    src = SourceConfig(
        reader="spg", path="spg", posescript="posescript", amass_root="amass", splits=["train"]
    )
    ok, unknown, empty = list(get_reader("spg")("spg", src, ReadContext(str(tmp_path))))
    assert (
        ok["task"] == "spg"
        and ok["caption"] == "A man proposing marriage."
        and ok["meta"]["activity"] == "proposing"
    )
    np.testing.assert_allclose(ok["poses"][0][3:66], seq[2, 3:66], atol=1e-6)
    assert "unknown pose id 6" in unknown["reject"] and "spg_train.json" in unknown["reject"]
    assert "empty description for pose id 5" in empty["reject"]


def test_rpe_one_row_per_description_type(tmp_path) -> None:
    pose = list(np.linspace(-0.2, 0.2, 72))
    entry = {
        "image": "images/train/0.jpg",
        "width": 64,
        "height": 48,
        "num_people": 2,
        "person": {
            "center": [10, 20],
            "scale": 0.3,
            "bbox": [1, 2, 20, 40],
            "pose": pose,
            "betas": [0.0] * 10,
            "activity": "waving",
            "position": "left",
        },
        "descriptions": {"outfit": "The person in red.", "pose": "The person waving.", "shape": ""},
    }
    write_json(tmp_path / "rpe" / "rpe_train.json", [entry, {"image": "x"}])
    src = SourceConfig(reader="rpe", path="rpe", splits=["train"])
    out = list(get_reader("rpe")("rpe", src, ReadContext(str(tmp_path))))
    outfit, posed, shape, broken = out
    assert outfit["task"] == "rpe" and outfit["caption"] == "The person in red."
    assert outfit["image"] == {"uri": str(tmp_path / "rpe" / "images" / "train" / "0.jpg"), "crop": None}
    assert outfit["meta"]["bbox"] == [1.0, 2.0, 20.0, 40.0] and posed["meta"]["description_type"] == "pose"
    np.testing.assert_allclose(posed["poses"][0], pose, atol=1e-6)
    assert "no 'shape' description" in shape["reject"]
    assert "entry 1" in broken["reject"]
    only = list(
        get_reader("rpe")(
            "rpe",
            SourceConfig(reader="rpe", path="rpe", splits=["train"], description_types=["pose"]),
            ReadContext(str(tmp_path)),
        )
    )
    assert [i["meta"]["description_type"] for i in only if "reject" not in i] == ["pose"]
