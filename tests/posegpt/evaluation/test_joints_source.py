"""SPIN's joints-only H36M files: reading, the seeded subset and the query shard the model actors read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from posegpt.data.crops import crop_box, encode_jpeg
from posegpt.data.templates import CHATPOSE_IMAGE_QUESTIONS
from posegpt.evaluation.config import JointsSourceConfig
from posegpt.evaluation.joints_source import read_spin_joints, write_query_shard
from posegpt.evaluation.shards import prompt_turns, subset_indices


def _write_spin_h36m(folder: Path, n: int = 5, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A file laid out as SPIN's preprocess/h36m.py writes it, with images under images/."""
    rng = np.random.default_rng(seed)
    names, centers, scales, ss = [], [], [], []
    global_idx = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]
    for i in range(n):
        name = f"images/S9_Walking.60457274_{5 * i + 1:06d}.jpg"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=95)
        s17 = rng.normal(0, 0.3, size=(17, 3))
        s17 -= s17[0]
        s24 = np.zeros((24, 4))
        s24[global_idx, :3] = s17
        s24[global_idx, 3] = 1
        names.append(name)
        centers.append([80.0 + i, 60.0 - i])
        scales.append(0.9 * 100 / 200.0)
        ss.append(s24)
    path = folder / "h36m_valid_protocol2.npz"
    np.savez(path, imgname=names, center=centers, scale=scales, S=ss)
    return path, np.asarray(ss)


def test_reads_spin_fields_and_the_14_joints(tmp_path: Path) -> None:
    path, s = _write_spin_h36m(tmp_path)
    rows = read_spin_joints(str(path), "h36m")
    assert len(rows) == 5
    assert rows.sample_ids[0] == "h36m:images/S9_Walking.60457274_000001.jpg:0"
    np.testing.assert_allclose(rows.box_sizes, 90.0)
    # SPIN's eval.py: S[:, J24_TO_J14, :-1] with J24_TO_J14 = J24_TO_J17[:14].
    j24_to_j17 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17]
    np.testing.assert_allclose(rows.joints14, s[:, j24_to_j17[:14], :-1])


def test_bad_files_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "nopose.npz", imgname=["a.jpg"], center=[[1.0, 2.0]], scale=[1.0])
    with pytest.raises(ValueError, match=r"nopose\.npz: missing arrays \['S'\]"):
        read_spin_joints(str(tmp_path / "nopose.npz"), "h36m")
    np.savez(
        tmp_path / "j17.npz", imgname=["a.jpg"], center=[[1.0, 2.0]], scale=[1.0], S=np.zeros((1, 17, 4))
    )
    with pytest.raises(ValueError, match=r"j17\.npz S: expected SPIN joints of shape"):
        read_spin_joints(str(tmp_path / "j17.npz"), "h36m")
    np.savez(
        tmp_path / "box.npz",
        imgname=["a.jpg", "b.jpg"],
        center=[[1.0, 2.0]] * 2,
        scale=[1.0, -1.0],
        S=np.ones((2, 24, 4)),
    )
    with pytest.raises(ValueError, match=r"box\.npz: row 1 \(b\.jpg\) has a bad box"):
        read_spin_joints(str(tmp_path / "box.npz"), "h36m")
    with pytest.raises(FileNotFoundError, match=r"joints source .*missing\.npz does not exist"):
        read_spin_joints(str(tmp_path / "missing.npz"), "h36m")


def test_subset_is_seeded_and_independent_of_order() -> None:
    ids = [f"h36m:img{i}.jpg:{i}" for i in range(1000)]
    a = subset_indices(ids, 200, seed=0)
    assert len(a) == 200 == len(set(a.tolist())) and (np.diff(a) > 0).all()
    assert (a == subset_indices(ids, 200, seed=0)).all()
    assert set(a.tolist()) != set(subset_indices(ids, 200, seed=1).tolist())
    rev = subset_indices(ids[::-1], 200, seed=0)
    assert {ids[::-1][i] for i in rev} == {ids[i] for i in a}
    assert len(subset_indices(ids, 0, 0)) == 1000 and len(subset_indices(ids[:50], 200, 0)) == 50


def test_query_shard_holds_the_prepare_crop_and_the_preset_question(tmp_path: Path) -> None:
    path, _ = _write_spin_h36m(tmp_path / "h36m")
    rows = read_spin_joints(str(path), "h36m").take(np.array([1, 3]))
    cfg = JointsSourceConfig(npz=str(path), image_size=64, crop_padding=1.2)
    out = write_query_shard(rows, cfg, tmp_path / "q" / "part-00000.parquet", preset="chatpose", seed=0)
    table = pq.read_table(out).to_pylist()
    assert [r["sample_id"] for r in table] == rows.sample_ids
    for k, r in enumerate(table):
        assert r["task"] == "image2pose" and r["source"] == "h36m" and r["poses"] is None
        question = prompt_turns(r["conversation"], r["sample_id"])[-1]["content"]
        assert question.startswith("<image>\n") and question[len("<image>\n") :] in CHATPOSE_IMAGE_QUESTIONS
        # The crop the prepare job cuts: SPIN's box (200 × scale) around the centre, times the padding.
        pixels = np.asarray(Image.open(tmp_path / "h36m" / rows.imgnames[k]).convert("RGB"))
        expected = encode_jpeg(crop_box(pixels, rows.centers[k], 90.0, 1.2, 64), 90)
        assert r["image"] == expected
        assert Image.open(io.BytesIO(r["image"])).size == (64, 64)
        assert json.loads(r["meta"])["index"] == int(rows.indices[k])
    missing = rows.take(np.array([0]))
    missing.imgnames[0] = "images/nope.jpg"
    with pytest.raises(FileNotFoundError, match=r"row 1: image .*nope\.jpg does not exist"):
        write_query_shard(missing, cfg, tmp_path / "q2.parquet", preset="chatpose", seed=0)
