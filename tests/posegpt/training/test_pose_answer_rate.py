"""A small trained model answers pose requests with a pose, and questions about an image in words.

The tiny model trains in-process for 200 steps on the tiny preset's task mix of the session's
prepared shards (every task of the mix, batches composed by ``split_counts``), then greedily
answers held-out test-split prompts of every pose task, and the demo's free-form requests.
Before SPG and RPE rows joined the mix, 1 in 8 RPE questions and 2 of the demo's 6 requests came
back in words (a VQA-like answer) with no ``<POSE>``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from posegpt.config import load_config
from tests.fixtures.model import torch_threads

REPO = Path(__file__).resolve().parents[3]
STEPS = 200  # the rate was already above 0.98 at 150 (measured on 2 cores); 300 steps cost 45 s more
PROMPTS_PER_TASK = 12


def user_turns(rows: list[dict]) -> list[tuple[list[dict], bytes | None]]:
    """The conversation up to the first assistant turn, and the image."""
    out = []
    for row in rows:
        turns = [dict(t) for t in row["conversation"]]
        first_answer = next(i for i, t in enumerate(turns) if t["role"] == "assistant")
        out.append((turns[:first_answer], row.get("image")))
    return out


@pytest.mark.slow
def test_pose_requests_are_answered_with_a_pose(prepared_shards: Path, tiny_base_dir: Path) -> None:
    from jobs.demo import DEMO_TEXT_QUERIES
    from posegpt.inference import GenerationSettings, PoseGPT, Query
    from posegpt.model.collate import Collator
    from posegpt.model.posegpt_model import build_model
    from posegpt.training.config import TrainConfig
    from posegpt.training.mixing import split_counts
    from posegpt.training.shards import first_poses, read_rows
    from posegpt.training.validation import training_mean_pose

    cfg = load_config(
        TrainConfig,
        REPO / "configs" / "train" / "tiny.yaml",
        [f"model.base_model={tiny_base_dir}", "model.build_tiny_if_missing=false"],
    )
    counts = split_counts(cfg.data.batch_size_per_worker, cfg.data.task_ratio)
    assert {"spg", "rpe"} <= {t for t, n in counts.items() if n}
    train = {t: read_rows(str(prepared_shards), t, "train", 2000) for t in counts if counts[t]}
    mean = training_mean_pose(first_poses(train["text2pose"] + train["image2pose"]))
    model_cfg = dataclasses.replace(cfg.model, pose_head_mean_pose=[float(v) for v in mean])
    with torch_threads(2):
        torch.manual_seed(0)
        model = build_model(model_cfg)
        collate = Collator.for_model(model)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.optimizer.lr)
        model.train()
        for step in range(STEPS):
            rows = []
            for task, n in counts.items():
                pool = train[task]
                rows += [pool[(step * n + k) % len(pool)] for k in range(n)]
            out = model(collate(rows))
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        engine = PoseGPT(model.eval())
        settings = GenerationSettings(max_new_tokens=24)
        answers: dict[str, list[str]] = {}
        for task in ("text2pose", "image2pose", "spg", "rpe", "vqa"):
            prompts = user_turns(read_rows(str(prepared_shards), task, "test", PROMPTS_PER_TASK))
            queries = [Query(turns, image) for turns, image in prompts]
            answers[task] = [a.text for a in engine.batch(queries, settings)]
        answers["demo"] = [a.text for a in engine.batch([Query(q) for q in DEMO_TEXT_QUERIES], settings)]
    pose_requests = [a for task in ("text2pose", "image2pose", "spg", "rpe", "demo") for a in answers[task]]
    rate = sum("<POSE>" in a for a in pose_requests) / len(pose_requests)
    missing = {t: [a for a in answers[t] if "<POSE>" not in a] for t in answers if t != "vqa"}
    assert rate >= 0.98, f"pose-answer rate {rate:.3f}; answers without a pose: {missing}"
    # Questions about an image are answered in words: the model did not learn to emit <POSE> everywhere.
    assert sum("<POSE>" not in a for a in answers["vqa"]) >= len(answers["vqa"]) // 2, answers["vqa"]
