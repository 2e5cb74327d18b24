"""Does a higher learning rate for the modules trained from scratch speed up learning?

    python benchmarks/head_lr_probe.py --shards outputs/demo/shards --steps 200 --head-lr 3e-4 1e-3

Trains the tiny preset in one process (no Ray, no DeepSpeed engine: the same model, loss, AdamW and
DeepSpeed scheduler, built from the block ``jobs/train.py`` hands DeepSpeed, with
``schedule.max_steps`` set to ``--steps``; one worker's batch of the preset's task mix per step) once
per ``--head-lr``: the LoRA adapters and the new token rows keep ``optimizer.lr``; the pose head,
the pose encoder's projector and the pose input encoder take the probed rate
(``optimizer.head_lr``). Prints, per run, the teacher-forced PA-MPJPE of each validation task's
first ``--val`` test rows as a ratio to the training mean pose's (the training job's
``val/<task>/pa_mpjpe_vs_mean_pose``), at every ``--every`` steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="a prepared shard folder (the demo's)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--val", type=int, default=48, help="test rows per validation task")
    parser.add_argument("--head-lr", type=float, nargs="+", default=[3e-4, 1e-3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of configs/train/tiny.yaml")
    args = parser.parse_args(argv)

    from deepspeed.runtime import lr_schedules

    from posegpt.body.model import BodyModel
    from posegpt.config import load_config
    from posegpt.model.collate import Collator
    from posegpt.model.posegpt_model import build_model
    from posegpt.training.config import TrainConfig
    from posegpt.training.deepspeed_config import scheduler_config
    from posegpt.training.optimizer_groups import parameter_groups
    from posegpt.training.shards import first_poses, read_rows
    from posegpt.training.validation import predict_poses, score, training_mean_pose

    torch.set_num_threads(args.threads)
    base = load_config(TrainConfig, REPO / "configs" / "train" / "tiny.yaml", args.overrides)
    counts = {t: n for t, n in base.task_counts().items() if n}
    train = {t: read_rows(args.shards, t, "train", 20000) for t in counts}
    val = {t: read_rows(args.shards, t, "test", args.val) for t in base.validation.tasks}
    means = {
        t: training_mean_pose(first_poses(read_rows(args.shards, t, "train", 2000, columns=["poses"])))
        for t in val
    }
    mean = training_mean_pose(first_poses(train.get("text2pose", []) + train.get("image2pose", [])))
    body = BodyModel.from_config(base.body, REPO / ".cache")
    print(f"mix per step {counts}; validation { ({t: len(r) for t, r in val.items()}) }", flush=True)

    table: dict[float, dict[int, dict[str, float]]] = {}
    for head_lr in args.head_lr:
        cfg = dataclasses.replace(
            base,
            optimizer=dataclasses.replace(base.optimizer, head_lr=head_lr),
            schedule=dataclasses.replace(base.schedule, max_steps=args.steps),
        )
        model_cfg = dataclasses.replace(cfg.model, pose_head_mean_pose=[float(v) for v in mean])
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg)
        collate = Collator.for_model(model)
        groups = parameter_groups(model, cfg.optimizer)
        opt = torch.optim.AdamW(groups, betas=cfg.optimizer.betas, eps=cfg.optimizer.eps)
        block = scheduler_config(cfg)
        # The same class and parameters DeepSpeed builds from the config's "scheduler" block.
        scheduler = getattr(lr_schedules, block["type"])(opt, **block["params"])
        params = [p for g in opt.param_groups for p in g["params"]]
        rng = np.random.default_rng(cfg.seed)
        orders = {t: rng.permutation(len(rows)) for t, rows in train.items()}
        table[head_lr] = {}
        start = time.time()
        for step in range(1, args.steps + 1):
            rows = []
            for task, n in counts.items():
                order = orders[task]
                rows += [train[task][order[(step * n + k) % len(order)]] for k in range(n)]
            model.train()
            out = model(collate(rows))
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.engine.grad_clip)
            opt.step()
            scheduler.step()
            if step % args.every == 0 or step == args.steps:
                model.eval()
                ratios = {}
                for task, rows_v in val.items():
                    pred, gt, _ = predict_poses(model, collate, rows_v, 16)
                    ratios[task] = score(pred, gt, means[task], body, "v")["v/pa_mpjpe_vs_mean_pose"]
                table[head_lr][step] = ratios
                shown = "  ".join(f"{t} {r:.3f}" for t, r in ratios.items())
                print(f"head_lr {head_lr:g} step {step} ({time.time() - start:.0f}s): {shown}", flush=True)

    print("\nPA-MPJPE / mean pose's, teacher-forced, first test rows of each task")
    tasks = list(val)
    print("| head_lr | step | " + " | ".join(tasks) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in tasks) + " |")
    for head_lr, by_step in table.items():
        for step, ratios in by_step.items():
            print(f"| {head_lr:g} | {step} | " + " | ".join(f"{ratios[t]:.3f}" for t in tasks) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
