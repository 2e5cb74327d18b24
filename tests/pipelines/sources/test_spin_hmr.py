"""SPIN and HMR2 npz readers: box sizes, splits, betas, rows without ground truth, broken files."""

from __future__ import annotations

import numpy as np

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext
from pipelines.sources.spin_hmr import read_hmr2, read_spin
from tests.pipelines.sources.raw_files import hmr2_npz, spin_npz


def poses(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.3, (n, 72))


def test_spin_rows_crop_boxes_and_rejects(tmp_path) -> None:
    p = poses(3)
    spin_npz(
        tmp_path / "spin" / "train.npz",
        ["a.jpg", "b.jpg", "c.jpg"],
        [[10, 20], [30, 40], [50, 60]],
        [1.0, 0.5, 2.0],
        p,
        has_smpl=[1, 0, 1],
    )
    out = list(
        read_spin(
            "spin", SourceConfig(reader="spin", path="spin", splits=["train"]), ReadContext(str(tmp_path))
        )
    )
    assert len(out) == 3
    a, b, c = out
    assert a["task"] == "image2pose" and a["split"] == "train" and a["source"] == "spin"
    assert a["image"] == {"uri": str(tmp_path / "spin" / "a.jpg"), "crop": [10.0, 20.0, 200.0]}
    np.testing.assert_allclose(a["poses"][0], p[0], atol=1e-6)
    np.testing.assert_allclose(a["betas"], np.arange(10) / 100, atol=1e-6)
    assert "has_smpl=0" in b["reject"] and "b.jpg" in b["reject"] and "train.npz" in b["reject"]
    assert c["image"]["crop"][2] == 400.0
    assert len({a["sample_id"], c["sample_id"]}) == 2


def test_single_npz_file_with_split_and_image_root(tmp_path) -> None:
    spin_npz(tmp_path / "extras" / "3dpw_test.npz", ["x/1.jpg"], [[5, 5]], [0.1], poses(1))
    src = SourceConfig(reader="spin", path="extras/3dpw_test.npz", image_root="imgs", dataset="3dpw")
    (out,) = list(read_spin("pw", src, ReadContext(str(tmp_path))))
    assert out["split"] == "test" and out["source"] == "3dpw" and out["sample_id"].startswith("3dpw:")
    assert out["image"]["uri"] == str(tmp_path / "imgs" / "x" / "1.jpg")


def test_hmr2_scale_in_pixels_and_has_betas(tmp_path) -> None:
    p = poses(3)
    hmr2_npz(
        tmp_path / "hmr2" / "val.npz",
        ["a.jpg", "b.jpg", "c.jpg"],
        [[1, 2], [3, 4], [5, 6]],
        [[40.0, 90.0], [50.0, 20.0], [10.0, 10.0]],
        p,
        has_pose=[1, 1, 0],
        has_betas=[1, 0, 1],
    )
    out = list(
        read_hmr2(
            "hmr2", SourceConfig(reader="hmr2", path="hmr2", splits=["val"]), ReadContext(str(tmp_path))
        )
    )
    a, b, c = out
    assert a["image"]["crop"] == [1.0, 2.0, 90.0] and b["image"]["crop"][2] == 50.0
    assert a["betas"] == [1.0] * 10 and b["betas"] is None
    np.testing.assert_allclose(b["poses"][0], p[1], atol=1e-6)
    assert "has_body_pose=0" in c["reject"] and "c.jpg" in c["reject"]


def test_truncated_npz_is_one_reject_naming_the_file(tmp_path) -> None:
    path = spin_npz(tmp_path / "spin" / "train.npz", ["a.jpg"] * 4, [[1, 1]] * 4, [1.0] * 4, poses(4))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = list(
        read_spin(
            "spin", SourceConfig(reader="spin", path="spin", splits=["train"]), ReadContext(str(tmp_path))
        )
    )
    assert len(out) == 1 and "reject" in out[0] and str(path) in out[0]["reject"]
