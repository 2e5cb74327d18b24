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


def test_hmr2_byte_names_and_pickled_extra_info(tmp_path) -> None:
    path = tmp_path / "hmr2" / "train.npz"
    path.parent.mkdir(parents=True)
    extra = np.array(
        [{"fitting_loss": np.array({}), "source": "vitpose", "w": np.float32(0.5)}, {}], dtype=object
    )
    np.savez(
        path,
        imgname=np.array([b"images/a.jpg", "images/\u00e9.jpg".encode()]),
        center=np.ones((2, 2)),
        scale=np.full((2, 2), 50.0),
        body_pose=poses(2),
        has_body_pose=np.ones(2),
        betas=np.zeros((2, 10)),
        has_betas=np.ones(2),
        extra_info=extra,
    )
    a, b = list(
        read_hmr2("h", SourceConfig(reader="hmr2", path="hmr2", splits=["train"]), ReadContext(str(tmp_path)))
    )
    assert a["sample_id"] == "h:h/images/a.jpg:0" and b["meta"]["imgname"] == "images/\u00e9.jpg"
    assert a["image"]["uri"] == str(tmp_path / "hmr2" / "images" / "a.jpg")
    assert a["meta"]["extra_info"] == {"source": "vitpose", "w": 0.5} and "extra_info" not in b["meta"]


def test_hostile_pickle_in_npz_is_refused_and_never_runs(tmp_path) -> None:
    from tests.pipelines.sources.raw_files import Hostile

    marker, control = tmp_path / "pwned", tmp_path / "control"
    path = tmp_path / "hmr2" / "train.npz"
    path.parent.mkdir(parents=True)
    arrays = dict(imgname=np.array(["a.jpg"]), center=np.ones((1, 2)), scale=np.ones(1), body_pose=poses(1))
    np.savez(path, **arrays, extra_info=np.array([Hostile(marker)], dtype=object))
    (out,) = list(
        read_hmr2("h", SourceConfig(reader="hmr2", path="hmr2", splits=["train"]), ReadContext(str(tmp_path)))
    )
    assert "refused" in out["reject"] and "extra_info" in out["reject"] and "open" in out["reject"]
    assert not marker.exists()
    # The control: numpy's own loader with pickles allowed does run the payload.
    np.savez(tmp_path / "c.npz", extra_info=np.array([Hostile(control)], dtype=object))
    np.load(tmp_path / "c.npz", allow_pickle=True)["extra_info"]
    assert control.exists()


def test_npz_is_planned_in_row_ranges_read_by_parts(tmp_path) -> None:
    from pipelines.sources.spin_hmr import plan

    spin_npz(
        tmp_path / "spin" / "train.npz", [f"{i}.jpg" for i in range(5)], [[1, 1]] * 5, [1.0] * 5, poses(5)
    )
    src = SourceConfig(reader="spin", path="spin", splits=["train", "val"])
    ctx = ReadContext(str(tmp_path))
    parts = plan("spin", src, ctx, rows_per_part=2)
    train = str(tmp_path / "spin" / "train.npz")
    assert parts == [
        {"file": train, "split": "train", "rows": [0, 2]},
        {"file": train, "split": "train", "rows": [2, 4]},
        {"file": train, "split": "train", "rows": [4, 5]},
        {"file": str(tmp_path / "spin" / "val.npz"), "split": "val", "rows": None},
    ]
    whole = list(read_spin("spin", src, ctx))
    by_parts = [item for part in parts for item in read_spin("spin", src, ReadContext(str(tmp_path)), part)]
    assert by_parts == whole and len(whole) == 6 and "val.npz" in whole[-1]["reject"]
