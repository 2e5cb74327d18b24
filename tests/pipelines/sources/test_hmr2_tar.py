"""HMR 2.0 webdataset tar shards: persons, boxes, rejects, truncation, hostile pickles, shard listing."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from pipelines.prepare_config import SourceConfig
from pipelines.sources.hmr2_tar import expand_braces, plan, read, split_member
from pipelines.sources.inputs import ReadContext
from tests.pipelines.sources.raw_files import Hostile, hmr2_person, hmr2_tar, jpeg_bytes


def poses(n: int) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 0.3, (n, 72))


def source(path: str = "tars", **kw) -> SourceConfig:
    return SourceConfig(reader="hmr2_tar", path=path, dataset="coco", **kw)


def test_persons_become_rows_with_4d_humans_boxes(tmp_path: Path) -> None:
    p = poses(3)
    betas = np.linspace(-1, 1, 10)
    img_a, img_b = jpeg_bytes(1), jpeg_bytes(2)
    hmr2_tar(
        tmp_path / "tars" / "000000.tar",
        [
            (
                "coco-train/img_a",
                {
                    "jpg": img_a,
                    "data.pyd": [
                        hmr2_person([40, 30], [0.3, 0.5], p[0], betas=betas),
                        hmr2_person([10, 12], [0.1, 0.1], p[1], has_pose=0.0),
                    ],
                },
            ),
            (
                "coco-train/img_b",
                {"jpg": img_b, "data.pyd": [hmr2_person([5, 6], [0.2, 0.1], p[2], has_betas=0.0)]},
            ),
        ],
    )
    a0, a1, b0 = list(read("coco", source(split="train"), ReadContext(str(tmp_path))))
    assert a0["sample_id"] == "coco:000000/coco-train/img_a:0" and a0["task"] == "image2pose"
    # The box side is max(scale) * 200, as 4D-Humans crops (scale is [w, h] in units of 200 px).
    assert a0["image"]["crop"] == pytest.approx([40.0, 30.0, 100.0])
    assert a0["image"]["data"] == img_a and a0["image"]["uri"].endswith("000000.tar#coco-train/img_a.jpg")
    np.testing.assert_allclose(a0["poses"][0], p[0], atol=1e-6)
    np.testing.assert_allclose(a0["betas"], betas, atol=1e-6)
    assert "has_body_pose=0" in a1["reject"] and "img_a" in a1["reject"] and "000000.tar" in a1["reject"]
    assert b0["betas"] is None and b0["image"]["data"] == img_b
    assert b0["image"]["crop"] == pytest.approx([5.0, 6.0, 40.0])


def test_missing_annotation_or_image_and_hostile_pickle_are_named_rejects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = pickle.dumps([Hostile(marker)])
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Hostile(control)))  # the same payload does run under plain pickle
    assert control.exists()
    hmr2_tar(
        tmp_path / "tars" / "000001.tar",
        [
            ("k1", {"jpg": jpeg_bytes(3)}),
            ("k2", {"data.pyd": [hmr2_person([1, 1], [0.1, 0.1], poses(1)[0])]}),
            ("k3", {"jpg": jpeg_bytes(4), "data.pyd": hostile}),
            ("k4", {"jpg": jpeg_bytes(5), "data.pyd": [hmr2_person([3, 3], [0.2, 0.2], poses(1)[0])]}),
        ],
    )
    k1, k2, k3, k4 = list(read("coco", source(), ReadContext(str(tmp_path))))
    assert "k1" in k1["reject"] and "annotation" in k1["reject"] and "000001.tar" in k1["reject"]
    assert "k2" in k2["reject"] and "image" in k2["reject"]
    assert "k3" in k3["reject"] and "refused" in k3["reject"] and "open" in k3["reject"]
    assert not marker.exists()
    assert "reject" not in k4 and k4["split"] == "train"


def test_truncated_shard_keeps_the_samples_before_the_cut(tmp_path: Path) -> None:
    path = hmr2_tar(
        tmp_path / "tars" / "000002.tar",
        [
            (f"s{i}", {"jpg": jpeg_bytes(10 + i), "data.pyd": [hmr2_person([8, 8], [0.2, 0.2], poses(1)[0])]})
            for i in range(3)
        ],
    )
    data = path.read_bytes()
    # Cut inside the last sample's image: s0 and s1 are whole, s2 is not.
    cut = data.index(jpeg_bytes(12)) + 100
    path.write_bytes(data[:cut])
    out = list(read("coco", source(), ReadContext(str(tmp_path))))
    assert [o.get("sample_id") for o in out[:2]] == ["coco:000002/s0:0", "coco:000002/s1:0"]
    assert all("reject" not in o for o in out[:2])
    assert len(out) == 3 and "ends early" in out[2]["reject"] and "000002.tar" in out[2]["reject"]


def test_shard_listing_braces_and_plan(tmp_path: Path) -> None:
    assert expand_braces("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
    assert split_member("coco-train/abc.data.pyd") == ("coco-train/abc", "data.pyd")
    for i in (1, 0):
        hmr2_tar(tmp_path / "tars" / f"00000{i}.tar", [("x", {"jpg": jpeg_bytes(i)})])
    (tmp_path / "tars" / "notes.txt").write_text("not a shard")
    ctx = ReadContext(str(tmp_path))
    assert plan("c", source(), ctx) == [
        {"file": str(tmp_path / "tars" / "000000.tar")},
        {"file": str(tmp_path / "tars" / "000001.tar")},
    ]
    assert len(plan("c", source("tars/{000000..000001}.tar"), ctx)) == 2
    (empty,) = plan("c", source("nothing"), ctx)
    (reject,) = list(read("c", source("nothing"), ctx, empty))
    assert "no *.tar shards" in reject["reject"]
