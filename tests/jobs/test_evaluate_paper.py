"""jobs/evaluate.py --config configs/eval/paper.yaml on synthetic shards: subsets, the paper's prompts,
the joints-only H36M source and SPG recall, each checked against a computation written here."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs import evaluate as evaluate_job
from posegpt.body.model import default_body_model
from posegpt.evaluation.shards import read_task_rows
from posegpt.evaluation.synthetic_joints import body_h36m_regressor, spin_s24

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _predictions(out: Path, task: str) -> dict[str, dict[str, str]]:
    with (out / "report" / "predictions" / f"{task}.csv").open() as f:
        return {r["sample_id"]: r for r in csv.DictReader(f)}


def _pose(row: dict[str, str]) -> np.ndarray:
    return np.array([float(v) for v in row["model/pose"].split()], np.float32)


@pytest.fixture(scope="module")
def paper_run(
    eval_shards: Path, posing_checkpoint_dir: Path, trained_retrieval: Path, ray_local, tmp_path_factory
):
    out = tmp_path_factory.mktemp("eval-paper")
    h36m = tmp_path_factory.mktemp("h36m")
    body = default_body_model()
    reg = body_h36m_regressor(body)
    np.save(h36m / "J_regressor_h36m.npy", reg)
    rng = np.random.default_rng(21)
    poses = rng.normal(0, 0.3, size=(5, 72))
    poses[:, 0] += np.pi
    names = []
    for i in range(5):
        name = f"images/S11_Posing.60457274_{5 * i + 1:06d}.jpg"
        (h36m / "images").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(80, 100, 3), dtype=np.uint8)).save(h36m / name)
        names.append(name)
    np.savez(
        h36m / "h36m_valid_protocol2.npz",
        imgname=names,
        center=np.full((5, 2), 45.0),
        scale=np.full(5, 0.3),
        S=spin_s24(body, reg, poses),
    )
    args = [
        "--config", str(REPO / "configs" / "eval" / "paper.yaml"),
        f"checkpoint={posing_checkpoint_dir}",
        f"output_dir={out}",
        f"data.shard_root={eval_shards}",
        "data.subset=2",
        f"data.joints_sources.h36m_p2.npz={h36m / 'h36m_valid_protocol2.npz'}",
        f"data.joints_sources.h36m_p2.image_root={h36m}",
        "data.joints_sources.h36m_p2.image_size=64",
        f"retrieval.model_dir={trained_retrieval}",
        "metrics.body_model=null",
        f"metrics.h36m_regressor={h36m / 'J_regressor_h36m.npy'}",
        "inference.device=cpu", "inference.dtype=null", "inference.num_gpus=0", "inference.concurrency=1",
        "inference.num_cpus=0.5", "inference.torch_threads=1", "inference.batch_size=4",
        "inference.max_new_tokens=12",
        "report.render_examples=false",
        "tracking.enabled=false",
    ]  # fmt: skip
    assert evaluate_job.main(args) == 0
    return out, h36m, reg


def test_image_subset_is_the_seeded_draw_per_source(paper_run, eval_shards: Path) -> None:
    out, _, _ = paper_run
    rows = read_task_rows(str(eval_shards), "image2pose", "test")
    expected = set()
    for source in ("3dpw", "h36m"):
        ids = [s for s, src in zip(rows.sample_ids, rows.sources, strict=True) if src == source]
        # Rank by the first 63 bits of sha256("<seed>:<id>"), seed 0; keep the 2 lowest.
        rank = {s: int.from_bytes(hashlib.sha256(f"0:{s}".encode()).digest()[:8], "big") >> 1 for s in ids}
        expected |= set(sorted(ids, key=rank.__getitem__)[:2])
    assert set(_predictions(out, "image2pose")) == expected
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert (
        metrics["image2pose/samples"] == 4 and metrics["text2pose/samples"] == 24
    )  # retrieval keeps its gallery


def test_questions_are_the_papers(paper_run, eval_shards: Path) -> None:
    from posegpt.data.templates import CHATPOSE_IMAGE_QUESTIONS, CHATPOSE_TEXT_QUESTIONS

    out, _, _ = paper_run
    spg = _predictions(out, "spg")
    assert {r["question"] for r in spg.values()} == {
        "this person is proposing marriage, can you give the SMPL pose of this person?"
    }
    rpe = read_task_rows(str(eval_shards), "rpe", "test")
    for sid, caption in zip(rpe.sample_ids, rpe.captions, strict=True):
        assert (
            _predictions(out, "rpe")[sid]["question"]
            == f"<image>\n{caption}, can you give the SMPL pose of this person?"
        )
    text = read_task_rows(str(eval_shards), "text2pose", "test")
    for sid, caption in zip(text.sample_ids, text.captions, strict=True):
        assert _predictions(out, "text2pose")[sid]["question"] in {
            q.format(caption=caption) for q in CHATPOSE_TEXT_QUESTIONS
        }
    assert {r["question"][len("<image>\n") :] for r in _predictions(out, "h36m_p2").values()} <= set(
        CHATPOSE_IMAGE_QUESTIONS
    )


def test_h36m_joints_follow_spin(paper_run) -> None:
    out, h36m, reg = paper_run
    body = default_body_model()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    with np.load(h36m / "h36m_valid_protocol2.npz") as data:
        s, names = data["S"], [str(n) for n in data["imgname"]]
    preds = _predictions(out, "h36m_p2")
    # data.subset=2 draws from the joints file too.
    assert len(preds) == 2 and metrics["h36m_p2/samples"] == 2
    assert "h36m_p2/mpjre_x100" not in metrics and "h36m_p2/pa_mpjpe" not in metrics
    rows = sorted(int(sid.rsplit(":", 1)[1]) for sid in preds)
    s = s[rows]
    pred = np.stack([_pose(preds[f"h36m:{names[i]}:{i}"]) for i in rows])
    # SPIN's eval.py: regressed joints minus the regressed pelvis, 14 kept; GT = S[:, J24_TO_J14, :-1].
    verts = body.mesh(torch.from_numpy(pred)).vertices.numpy().astype(np.float64)
    kp = np.einsum("jv,bvc->bjc", reg.astype(np.float64), verts)
    p14 = kp[:, [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]] - kp[:, [0]]
    g14 = s[:, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18], :-1]
    mpjpe = np.sqrt(((p14 - g14) ** 2).sum(-1)).mean(-1) * 1000
    assert metrics["h36m_p2/mpjpe_14"] == pytest.approx(mpjpe.mean(), rel=1e-4)
    recon = []
    for p, g in zip(p14, g14, strict=True):
        a, b = p - p.mean(0), g - g.mean(0)
        u, _, vh = np.linalg.svd(a.T @ b)
        z = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vh))])
        r = vh.T @ z @ u.T
        scale = np.trace(r @ a.T @ b) / (a**2).sum()
        recon.append(np.linalg.norm(scale * a @ r.T + g.mean(0) - g, axis=-1).mean() * 1000)
    assert metrics["h36m_p2/pa_mpjpe_14"] == pytest.approx(float(np.mean(recon)), rel=1e-4, abs=1e-3)
    assert "h36m_p2/mean_pose/mpjpe_14" in metrics


def test_spg_recall_is_reported(paper_run) -> None:
    # The computation is pinned on a larger gallery in tests/posegpt/evaluation/test_runner.py.
    out, _, _ = paper_run
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    for k in (5, 10, 20):
        for key in (f"spg/r_t2p_{k}", f"spg/r_p2t_{k}", f"spg/gt/r_t2p_{k}", f"spg/mean_pose/r_t2p_{k}"):
            assert 0.0 <= metrics[key] <= 100.0, key
    with (out / "report" / "retrieval.csv").open() as f:
        assert {(r["task"], r["method"]) for r in csv.DictReader(f)} >= {("spg", "model"), ("spg", "chance")}
