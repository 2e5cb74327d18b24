"""Synthetic pose pairs: modifiers from measured differences, the release layout, and prepare rows end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.prepare import prepare
from pipelines.prepare_config import PrepareConfig
from pipelines.synthetic import captioner
from pipelines.synthetic.config import SynthConfig
from pipelines.synthetic.posefix import _UNCHANGED, modifier_clauses
from pipelines.synthetic.world import write_world
from posegpt.body.model import default_body_model
from posegpt.body.skeleton import JOINT_INDEX as J
from posegpt.config import load_config
from posegpt.data.schema import POSE_INPUT_TOKEN, POSE_TOKEN, validate_row

REPO = Path(__file__).resolve().parents[3]


def _codes(pose: np.ndarray) -> captioner.Posecodes:
    import torch

    joints = default_body_model().joints(torch.as_tensor(pose[None], dtype=torch.float32))[0].numpy()
    return captioner.posecodes(joints)


def test_modifier_names_the_joint_that_bends() -> None:
    # Pose A: the rest pose; pose B: the left knee bent by 90° about x (body frame, y up).
    a = np.zeros(72)
    b = a.copy()
    b[3 * J["left_knee"]] = np.pi / 2
    clauses = modifier_clauses(_codes(a), _codes(b))
    assert "bend the left knee more" in clauses
    # Lifting the foot off the ground also changes the whole-body posture, the largest change, named first.
    assert clauses[0] == "go from standing to standing on one leg"
    assert not any("right knee" in c for c in clauses)
    back = modifier_clauses(_codes(b), _codes(a))
    assert any(c == "straighten the left leg" for c in back)
    assert modifier_clauses(_codes(a), _codes(a)) == []


@pytest.fixture(scope="module")
def pair_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pair_world")
    cfg = SynthConfig(poses=60, images=2, rpe_scenes=1, llava_rows=2, v1_poses=5, pose_pairs=40)
    summary = write_world(cfg, root)
    assert summary.manifest["posefix"]["pairs"] == 40
    return root


def test_world_writes_pairs_in_the_release_layout(pair_world: Path) -> None:
    folder = pair_world / "posefix"
    pairs = json.loads((folder / "pair_id_2_pose_ids.json").read_text())
    ids = json.loads((folder / "ids_2_dataset_sequence_and_frame_index_100k.json").read_text())
    splits = {
        s: {
            kind: json.loads((folder / f"{s}_{kind}_sequence_pair_ids.json").read_text())
            for kind in ("in", "out")
        }
        for s in ("train", "val", "test")
    }
    listed = [k for s in splits.values() for kind in s.values() for k in kind]
    assert sorted(listed) == list(range(len(pairs))) and len({tuple(p) for p in pairs}) == len(pairs)
    posescript_splits = {
        pid: s
        for s in ("train", "val", "test")
        for pid in json.loads((pair_world / "posescript" / f"{s}_ids_100k.json").read_text())
    }
    for s, kinds in splits.items():
        for kind, pair_ids in kinds.items():
            for k in pair_ids:
                a, b = pairs[k]
                assert a != b and posescript_splits[a] == posescript_splits[b] == s
                assert (ids[str(a)][1] == ids[str(b)][1]) == (kind == "in")
    auto = json.loads((folder / "posefix_auto_135305.json").read_text())
    assert set(auto) == {str(k) for k in range(len(pairs))} and all(len(v) == 2 for v in auto.values())
    # Only pairs with a measured difference are kept: no modifier says "keep the pose".
    assert not any(text in _UNCHANGED for v in auto.values() for text in v)


def test_prepare_writes_poseedit_and_posediff_rows(pair_world: Path, tmp_path: Path) -> None:
    cfg = load_config(
        PrepareConfig,
        REPO / "configs" / "prepare" / "synthetic.yaml",
        [
            f"raw_root={pair_world}",
            f"out={tmp_path / 'shards'}",
            "engine=local",
            "tracking.enabled=false",
            "sources.posefix.enabled=true",
            *[f"sources.{s}.enabled=false" for s in ("spin", "hmr2", "spg", "rpe", "llava", "posescript")],
        ],
    )
    result = prepare(cfg)
    counts = result.per_input["posefix"]
    assert counts["read"] == counts["accepted"] + counts["rejected"]
    pairs = json.loads((pair_world / "posefix" / "pair_id_2_pose_ids.json").read_text())
    assert counts["accepted"] == 2 * len(pairs) and counts["rejected"] == 0
    for task, n_in, n_out in (("poseedit", 1, 1), ("posediff", 2, 0)):
        rows = [
            r
            for f in sorted((tmp_path / "shards" / task).rglob("*.parquet"))
            for r in pq.read_table(f).to_pylist()
        ]
        assert len(rows) == len(pairs)
        for row in rows:
            assert validate_row(row) is None
            user, answer = row["conversation"][0]["content"], row["conversation"][1]["content"]
            assert user.count(POSE_INPUT_TOKEN) == n_in and answer.count(POSE_TOKEN) == n_out
            meta = json.loads(row["meta"])
            pair = pairs[meta["pair_id"]]
            assert meta["pose_ids"] == pair and meta["pose_inputs"] == list(range(n_in))
            assert len(row["poses"]) == 2
            if task == "posediff":
                assert answer == row["caption"]
