"""The small synthetic world on disk: every file in the format the real datasets use."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from pipelines.synthetic.poses import ACTIVITY_BY_NAME
from posegpt.body.model import default_body_model
from posegpt.body.skeleton import JOINT_INDEX as J
from posegpt.geometry import zup_root_to_camera_frame

OLD_TO_NEW = {
    "BioMotionLab_NTroje": "BMLrub",
    "MPI_HDM05": "HDM05",
    "MPI_Limits": "PosePrior",
    "DFaust_67": "DFaust",
}
SPLITS = ("train", "val", "test")


def load(path: Path) -> object:
    return json.loads(path.read_text())


def resolve_amass(root: Path, rel: str) -> Path:
    """What a reader does: the path as PoseScript wrote it, else with today's folder name."""
    direct = root / "amass" / rel
    if direct.exists():
        return direct
    head, _, rest = rel.partition("/")
    return root / "amass" / OLD_TO_NEW.get(head, head) / rest


def smpl_from_amass(poses: np.ndarray) -> np.ndarray:
    """DESIGN.md: the first 22 SMPL-H joints, identity hands, root turned into the camera convention."""
    out = np.zeros((len(poses), 72))
    out[:, :66] = poses[:, :66]
    out[:, :3] = zup_root_to_camera_frame(torch.as_tensor(poses[:, :3])).numpy()
    return out


def body_joints(poses: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return default_body_model().joints(torch.as_tensor(poses, dtype=torch.float32)).numpy()


def test_manifest_lists_what_is_on_disk(synthetic_world: Path) -> None:
    world = load(synthetic_world / "world.json")
    assert isinstance(world, dict)
    assert world["config"]["poses"] == 300 and world["image_rows"] == 200
    for dataset in ("spin", "hmr2"):
        for entry in world[dataset].values():
            with np.load(synthetic_world / entry["npz"]) as npz:
                assert len(npz["imgname"]) == entry["rows"]
    assert sum(world[d][s]["rows"] for d in ("spin", "hmr2") for s in world[d]) == 200
    for split in SPLITS:
        assert len(load(synthetic_world / world["rpe"][split]["json"])) == world["rpe"][split]["entries"]  # type: ignore[arg-type]


def test_amass_files_and_old_names(synthetic_world: Path) -> None:
    files = sorted((synthetic_world / "amass").rglob("*_poses.npz"))
    assert len(files) == 75
    folders = {f.relative_to(synthetic_world / "amass").parts[0] for f in files}
    assert folders & set(OLD_TO_NEW) and folders & set(OLD_TO_NEW.values()), folders
    with np.load(files[0]) as npz:
        assert set(npz.files) == {"poses", "trans", "betas", "gender", "mocap_framerate"}
        t = npz["poses"].shape[0]
        assert npz["poses"].shape == (t, 156) and npz["trans"].shape == (t, 3)
        assert npz["betas"].shape == (16,) and npz["gender"].dtype.kind == "U" and npz["gender"].shape == ()
        assert float(npz["mocap_framerate"]) > 0


def test_posescript_v2_files(synthetic_world: Path) -> None:
    ps = synthetic_world / "posescript"
    ids = load(ps / "ids_2_dataset_sequence_and_frame_index_100k.json")
    assert isinstance(ids, dict) and len(ids) == 300
    split_ids = {s: load(ps / f"{s}_ids_100k.json") for s in SPLITS}
    all_ids = [i for s in SPLITS for i in split_ids[s]]  # type: ignore[union-attr]
    assert sorted(all_ids) == sorted(int(k) for k in ids) and all(isinstance(i, int) for i in all_ids)
    old_named = 0
    for key, (dataset, rel, frame) in ids.items():
        assert dataset == "AMASS" and re.fullmatch(r"\d+", key)
        assert rel.split("/")[0] not in OLD_TO_NEW.values(), (
            "PoseScript names sequences by AMASS's old folders"
        )
        path = resolve_amass(synthetic_world, rel)
        assert path.exists(), rel
        old_named += path == synthetic_world / "amass" / rel
        with np.load(path) as npz:
            assert 0 <= frame < npz["poses"].shape[0]
    assert 0 < old_named < len(ids)
    human = load(ps / "posescript_human_6293.json")
    auto = load(ps / "posescript_auto_100k.json")
    assert isinstance(human, dict) and isinstance(auto, dict)
    assert set(auto) == set(ids) and 0 < len(human) < len(ids)
    assert all(isinstance(v, list) and len(v) == 3 and len(set(v)) >= 2 for v in auto.values())
    kinds = {type(v) for v in human.values()}
    assert kinds == {str, list}, "human captions: mostly strings, a few lists"
    # Sequences do not straddle splits.
    split_of = {i: s for s in SPLITS for i in split_ids[s]}  # type: ignore[union-attr]
    by_seq: dict[str, set[str]] = {}
    for key, (_, rel, _) in ids.items():
        by_seq.setdefault(rel, set()).add(split_of[int(key)])
    assert all(len(v) == 1 for v in by_seq.values())


def test_posescript_v1_copy(synthetic_world: Path) -> None:
    v1, v2 = synthetic_world / "posescript_v1", synthetic_world / "posescript"
    ids = load(v1 / "ids_2_dataset_sequence_and_frame_index.json")
    ids2 = load(v2 / "ids_2_dataset_sequence_and_frame_index_100k.json")
    assert isinstance(ids, dict) and isinstance(ids2, dict) and len(ids) == 100
    assert all(ids2[k] == v for k, v in ids.items())
    assert sorted(i for s in SPLITS for i in load(v1 / f"{s}_ids.json")) == sorted(int(k) for k in ids)  # type: ignore[union-attr]
    human = load(v1 / "human6293.json")
    assert (
        isinstance(human, dict) and all(isinstance(v, str) for v in human.values()) and set(human) <= set(ids)
    )
    for letter in "ABCDEF":
        auto = load(v1 / f"automatic_{letter}.json")
        assert (
            isinstance(auto, dict)
            and set(auto) == set(ids)
            and all(isinstance(v, str) and v for v in auto.values())
        )


def test_captions_match_the_joints_of_the_amass_frames(synthetic_world: Path) -> None:
    """Read poses as a reader would (old names, frame index, DESIGN conversion) and check the captions."""
    ps = synthetic_world / "posescript"
    ids = load(ps / "ids_2_dataset_sequence_and_frame_index_100k.json")
    auto = load(ps / "posescript_auto_100k.json")
    assert isinstance(ids, dict) and isinstance(auto, dict)
    keys = sorted(ids, key=int)
    poses = []
    for key in keys:
        _, rel, frame = ids[key]
        with np.load(resolve_amass(synthetic_world, rel)) as npz:
            poses.append(npz["poses"][frame])
    smpl = smpl_from_amass(np.stack(poses))
    # Camera convention → y up for heights: Rx(180°) flips y and z.
    jt = body_joints(smpl) * np.array([1.0, -1.0, -1.0])
    height = jt[:, :, 1] - jt[:, :, 1].min(axis=1, keepdims=True)
    spine = jt[:, J["neck"]] - jt[:, J["pelvis"]]
    torso_deg = np.degrees(np.arccos(spine[:, 1] / np.linalg.norm(spine, axis=1)))
    checked = {"lying": 0, "knee": 0}
    for i, key in enumerate(keys):
        for caption in auto[key]:
            text = caption.lower()
            if "lying" in text or "lies " in text:
                checked["lying"] += 1
                assert torso_deg[i] > 60 and height[i, J["pelvis"]] < 0.5, caption
            if re.search(r"kneel\w* (on|with) both knees|is on both knees", text):
                checked["knee"] += 1
                assert height[i, J["left_knee"]] < 0.2 and height[i, J["right_knee"]] < 0.2, caption
            if "standing" in text or "stands" in text:
                assert torso_deg[i] < 45 and height[i, J["pelvis"]] > 0.6, caption
            if "both knees are straight" in text or "knees are both straight" in text:
                for side in ("left", "right"):
                    u = jt[i, J[f"{side}_hip"]] - jt[i, J[f"{side}_knee"]]
                    v = jt[i, J[f"{side}_ankle"]] - jt[i, J[f"{side}_knee"]]
                    assert math.degrees(math.acos(u @ v / np.linalg.norm(u) / np.linalg.norm(v))) > 150, (
                        caption
                    )
    assert checked["lying"] > 0 and checked["knee"] > 0


def test_spg_descriptions(synthetic_world: Path) -> None:
    ids = load(synthetic_world / "posescript" / "ids_2_dataset_sequence_and_frame_index_100k.json")
    assert isinstance(ids, dict)
    for split in SPLITS:
        split_ids = set(load(synthetic_world / "posescript" / f"{split}_ids_100k.json"))  # type: ignore[arg-type]
        entries = load(synthetic_world / "spg" / f"spg_{split}.json")
        assert isinstance(entries, list) and entries
        for e in entries:
            assert set(e) == {"pose_id", "activity", "description"}
            assert e["pose_id"] in split_ids
            assert e["description"] in ACTIVITY_BY_NAME[e["activity"]].implicit
            assert e["activity"] in ids[str(e["pose_id"])][1], "the sequence file is named after its activity"


def test_spin_and_hmr2_npz(synthetic_world: Path) -> None:
    with np.load(synthetic_world / "spin" / "train.npz") as spin:
        n = len(spin["imgname"])
        # SPIN's keys, plus the tight box ``bbox`` (readers ignore it; the detector trains on it).
        assert set(spin.files) == {"imgname", "center", "scale", "pose", "shape", "has_smpl", "bbox"}
        box = spin["bbox"]
        assert np.allclose(spin["center"], (box[:, :2] + box[:, 2:]) / 2, atol=0.02)
        assert np.allclose(spin["scale"], 1.2 * (box[:, 2:] - box[:, :2]).max(axis=1) / 200, atol=1e-3)
        assert spin["center"].shape == (n, 2) and spin["scale"].shape == (n,)
        assert (
            spin["pose"].shape == (n, 72)
            and spin["shape"].shape == (n, 10)
            and spin["has_smpl"].shape == (n,)
        )
        missing = spin["has_smpl"] == 0
        assert np.all(spin["pose"][missing] == 0)
        img = Image.open(synthetic_world / "spin" / spin["imgname"][0])
        assert img.format == "JPEG" and img.size == (256, 256)
        # SPIN's scale: box side / 200; people fill 45–85% of a 256 px image (×1.2 padding).
        side = spin["scale"] * 200
        assert np.all(side > 0.3 * 256) and np.all(side < 1.2 * 256)
        assert np.all((spin["center"] > 0) & (spin["center"] < 256))
        upright_share = np.mean(body_joints(spin["pose"][~missing])[:, J["head"], 1] < 0)
        assert upright_share > 0.6, "camera frame, y down: most people have the head above the pelvis"
    for split, scale_shape in (("train", 2), ("test", 1)):
        with np.load(synthetic_world / "hmr2" / f"{split}.npz") as hmr2:
            n = len(hmr2["imgname"])
            keys = {"imgname", "center", "scale", "body_pose", "has_body_pose", "betas", "has_betas", "bbox"}
            assert set(hmr2.files) == keys
            assert hmr2["scale"].shape == ((n, 2) if scale_shape == 2 else (n,))
            assert hmr2["body_pose"].shape == (n, 72) and hmr2["betas"].shape == (n, 10)
            # Pixels, not /200: the padded box's [width, height] (train) or its longer side.
            wh = 1.2 * (hmr2["bbox"][:, 2:] - hmr2["bbox"][:, :2])
            assert np.allclose(hmr2["scale"], wh if scale_shape == 2 else wh.max(axis=1), atol=0.01)
            for name in hmr2["imgname"]:
                assert (synthetic_world / "hmr2" / name).is_file()


def test_rpe_entries(synthetic_world: Path) -> None:
    entries = load(synthetic_world / "rpe" / "rpe_train.json")
    assert isinstance(entries, list) and entries
    by_image: dict[str, list[dict]] = {}
    for e in entries:
        assert set(e) == {"image", "width", "height", "num_people", "person", "descriptions"}
        assert set(e["descriptions"]) == {"behaviour", "outfit", "pose", "shape", "summary"}
        assert all(isinstance(v, str) and len(v) > 10 for v in e["descriptions"].values())
        p = e["person"]
        assert (
            len(p["pose"]) == 72 and len(p["betas"]) == 10 and len(p["bbox"]) == 4 and len(p["center"]) == 2
        )
        x0, y0, x1, y1 = p["bbox"]
        assert p["center"] == pytest.approx([(x0 + x1) / 2, (y0 + y1) / 2], abs=0.02)
        assert p["scale"] == pytest.approx(1.2 * max(x1 - x0, y1 - y0) / 200, abs=1e-3)
        assert (synthetic_world / "rpe" / e["image"]).is_file()
        by_image.setdefault(e["image"], []).append(e)
    for people in by_image.values():
        assert len(people) == people[0]["num_people"] in (2, 3)
        # Left to right in the image, distinct shirts and distinct activities: each description picks one person.
        centres = [p["person"]["center"][0] for p in people]
        order = {"left": 0, "middle": 1, "right": 2}
        assert sorted(centres) == [
            c for _, c in sorted(zip([order[p["person"]["position"]] for p in people], centres, strict=True))
        ]
        assert len({p["descriptions"]["outfit"] for p in people}) == len(people)
        assert len({p["person"]["activity"] for p in people}) == len(people)
        for p in people:
            # Scenes hold people on their feet, seen by a level camera: the pelvis's up axis points up in the image (-y).
            up = Rotation.from_rotvec(p["person"]["pose"][:3]).apply([0.0, 1.0, 0.0])
            assert up[1] < -0.15, p["person"]["activity"]


def test_llava_rows(synthetic_world: Path) -> None:
    rows = load(synthetic_world / "llava" / "llava_v1_5_mix665k.json")
    assert isinstance(rows, list) and len(rows) == 120
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    with_image = [r for r in rows if "image" in r]
    assert 0 < len(with_image) < len(rows)
    for r in rows:
        conv = r["conversations"]
        assert len(conv) >= 2 and len(conv) % 2 == 0
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        n_image = sum(t["value"].count("<image>") for t in conv)
        if "image" in r:
            assert n_image == 1 and conv[0]["value"].startswith("<image>")
            assert (synthetic_world / r["image"]).is_file()
            assert "/train/" in r["image"]
        else:
            assert n_image == 0
        assert all(t["value"].strip() for t in conv)
