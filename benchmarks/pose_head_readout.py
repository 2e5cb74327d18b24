"""Does the image reach the hidden state at ``<POSE>``, and can the pose head read it?

    python benchmarks/pose_head_readout.py --shards outputs/demo/shards [--train 1500 --test 250 --steps 600]

For three layouts of the tiny preset's image tokens (CLIP + pose tokens; pose tokens alone; pose
tokens with the grid pooled to one token), builds the untrained model, takes the final hidden state
at the position that predicts ``<POSE>`` for image2pose rows, and scores on ``test`` rows, as
PA-MPJPE against the mean training pose's:

* a ridge regression from those states to the 6D pose (what a linear readout can get), and
* for the last layout, the pose head itself trained by Adam with the training loss (L1 on rotation
  matrices, batches of 16) on the same fixed states, with its input plain and standardised
  (``model.pose_head_input_norm``).

Prints one table; docs/training.md quotes it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

LAYOUTS = {
    "CLIP + pose tokens (append, pool 1)": ["pose_encoder.mode=append", "pose_encoder.pool=1"],
    "pose tokens only (replace, pool 1)": ["pose_encoder.mode=replace", "pose_encoder.pool=1"],
    "pose tokens only, grid pooled (replace, pool 4)": ["pose_encoder.mode=replace", "pose_encoder.pool=4"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", required=True)
    parser.add_argument("--model", default=str(REPO / "configs" / "model" / "tiny.yaml"))
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=250)
    parser.add_argument("--steps", type=int, default=600, help="Adam steps of the pose head (batch 16)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pose_encoder_probe import pa, ridge

    from posegpt.body.model import default_body_model
    from posegpt.config import load_config
    from posegpt.geometry import (
        axis_angle_to_rot6d,
        axis_angle_to_rotmat,
        rot6d_to_axis_angle,
        rotmat_to_axis_angle,
    )
    from posegpt.model.collate import Collator
    from posegpt.model.config import PoseGPTModelConfig
    from posegpt.model.pose_head import PoseHead
    from posegpt.model.posegpt_model import build_model
    from posegpt.training.shards import first_poses, read_rows
    from posegpt.training.validation import training_mean_pose

    start = time.perf_counter()
    train_rows = read_rows(args.shards, "image2pose", "train", args.train)
    test_rows = read_rows(args.shards, "image2pose", "test", args.test)
    mean = training_mean_pose(first_poses(train_rows))
    body = default_body_model()

    def states(overrides: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cfg = load_config(PoseGPTModelConfig, args.model, [*overrides, "pose_head_init=identity"])
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        collate = Collator.for_model(model)
        out = []
        for rows in (train_rows, test_rows):
            hidden, poses = [], []
            for i in range(0, len(rows), 32):
                batch = collate(rows[i : i + 32])
                with torch.no_grad():
                    h, _ = model.encode(
                        batch["input_ids"],
                        batch["attention_mask"],
                        batch.get("pixel_values"),
                        pose_pixel_values=batch.get("pose_pixel_values"),
                    )
                index = batch["pose_index"]
                hidden.append(h[index[:, 0], index[:, 1]].numpy())
                poses.append(batch["pose_targets"].numpy())
            out += [np.concatenate(hidden), np.concatenate(poses)]
        return out[0], out[1], out[2], out[3]

    results: dict[str, float] = {}
    for name, overrides in LAYOUTS.items():
        h_train, y_train, h_test, y_test = states(overrides)
        gt = torch.from_numpy(y_test)
        mean_pa = pa(torch.from_numpy(mean)[None].float().expand(len(gt), -1), gt, body)
        six = axis_angle_to_rot6d(torch.from_numpy(y_train).view(-1, 24, 3)).reshape(len(y_train), -1).numpy()
        pred = ridge(h_train, six, h_test, 0.1)
        results[f"ridge on the untrained model's <POSE> state, {name}"] = (
            pa(rot6d_to_axis_angle(torch.from_numpy(pred).float().view(-1, 24, 6)).reshape(-1, 72), gt, body)
            / mean_pa
        )
    # The pose head on the last layout's fixed states, trained as in the fine-tune.
    states_train, states_test = torch.from_numpy(h_train), torch.from_numpy(h_test)
    target = axis_angle_to_rotmat(torch.from_numpy(y_train).view(-1, 24, 3))
    for norm in ("none", "running"):
        torch.manual_seed(0)
        head = PoseHead(
            states_train.shape[1], init="mean", mean_pose=[float(x) for x in mean], input_norm=norm
        )
        opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.0)
        for _ in range(args.steps):
            i = torch.randint(0, len(states_train), (16,))
            loss = (head.rotmats(states_train[i]) - target[i]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred_aa = rotmat_to_axis_angle(head.eval().rotmats(states_test)).reshape(-1, 72)
        results[f"pose head trained {args.steps} steps on those states, input {norm}"] = (
            pa(pred_aa, gt, body) / mean_pa
        )
    print(f"image2pose: {len(train_rows)} train / {len(test_rows)} test rows of {args.shards}")
    print("| readout | PA-MPJPE vs mean pose |\n| --- | --- |")
    for name, value in results.items():
        print(f"| {name} | {value:.3f}x |")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
