"""How much pose the image features carry: ridge probes on the demo's image2pose crops.

    python benchmarks/pose_encoder_probe.py --shards outputs/demo/shards [--train 3000] [--test 500]

For the tiny preset's frozen random CLIP tower (LLaVA's feature layer, patch tokens
flattened) and for the pose encoder (its tokens flattened), a ridge regression from the
features of ``train`` rows to the 6D pose is scored on ``test``-split rows: PA-MPJPE against
the mean training pose's. The pose encoder's own pretraining regressor (``head.*`` of the
weights file) is scored on the same rows. Prints one table; all ratios come from one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def rows_of(shards: str, split: str, limit: int) -> tuple[list, np.ndarray]:
    from posegpt.model.vision_input import decode_image
    from posegpt.training.shards import read_rows

    rows = [r for r in read_rows(shards, "image2pose", split, limit) if r.get("poses") and r.get("image")]
    images = [decode_image(r["image"], r["sample_id"]) for r in rows]
    return images, np.stack([np.asarray(r["poses"][0], np.float32) for r in rows])


def ridge(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, alpha: float) -> np.ndarray:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    y_mu = train_y.mean(0)
    w = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ (train_y - y_mu))
    return b @ w + y_mu


def pa(pred_aa: torch.Tensor, gt_aa: torch.Tensor, body) -> float:  # type: ignore[no-untyped-def]
    from posegpt.metrics import pa_mpjpe

    return float(pa_mpjpe(body.joints(pred_aa), body.joints(gt_aa))[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", required=True)
    parser.add_argument("--model", default=str(REPO / "configs" / "model" / "tiny.yaml"))
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument(
        "--alpha", type=float, default=1.0, help="ridge strength per row (features standardised)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from safetensors.torch import load_file

    from posegpt.body.model import default_body_model
    from posegpt.config import load_config
    from posegpt.geometry import axis_angle_to_rot6d, rot6d_to_axis_angle
    from posegpt.model.config import PoseGPTModelConfig
    from posegpt.model.loading import load_llava, load_processor, resolve_base_dir
    from posegpt.model.vision_input import pixel_values
    from posegpt.vision.pose_encoder import PoseEncoder, pose_pixel_values, resolve_weights
    from posegpt.vision.pretrain import chordal_mean_pose

    start = time.perf_counter()
    cfg = load_config(PoseGPTModelConfig, args.model)
    body = default_body_model()
    train_images, train_poses = rows_of(args.shards, "train", args.train)
    test_images, test_poses = rows_of(args.shards, "test", args.test)
    gt = torch.from_numpy(test_poses)
    mean = chordal_mean_pose(train_poses)
    mean_pa = pa(mean[None].expand(len(gt), -1), gt, body)
    train_6d = axis_angle_to_rot6d(torch.from_numpy(train_poses).view(-1, 24, 3)).reshape(
        len(train_poses), -1
    )

    def probe(extract) -> float:  # type: ignore[no-untyped-def]
        feats = [
            np.concatenate([extract(imgs[i : i + 64]) for i in range(0, len(imgs), 64)])
            for imgs in (train_images, test_images)
        ]
        pred6d = ridge(feats[0], train_6d.numpy(), feats[1], args.alpha)
        return pa(
            rot6d_to_axis_angle(torch.from_numpy(pred6d).float().view(-1, 24, 6)).reshape(-1, 72), gt, body
        )

    base = resolve_base_dir(cfg)
    processor = load_processor(base)
    llava = load_llava(base, "float32")

    @torch.no_grad()
    def clip_features(images) -> np.ndarray:  # type: ignore[no-untyped-def]
        out = llava.model.vision_tower(
            pixel_values(processor.image_processor, images), output_hidden_states=True
        )
        return out.hidden_states[-2][:, 1:].flatten(1).numpy()

    encoder = PoseEncoder(cfg.pose_encoder).eval()
    encoder.load_weights()

    @torch.no_grad()
    def pose_features(images) -> np.ndarray:  # type: ignore[no-untyped-def]
        return encoder(pose_pixel_values(images, cfg.pose_encoder)).flatten(1).numpy()

    results = {"mean training pose": mean_pa, "ridge on CLIP features (random tower)": probe(clip_features)}
    results["ridge on pose encoder tokens"] = probe(pose_features)
    head = {
        k.removeprefix("head."): v
        for k, v in load_file(str(resolve_weights(cfg.pose_encoder.weights))).items()
        if k.startswith("head.")
    }
    if head:
        with torch.no_grad():
            _, g = encoder.features(pose_pixel_values(test_images, cfg.pose_encoder))
            six = g @ head["weight"].T + head["bias"]
        results["pose encoder's pretraining regressor"] = pa(
            rot6d_to_axis_angle(six.view(-1, 24, 6)).reshape(-1, 72), gt, body
        )
    print(f"image2pose crops: {len(train_images)} train / {len(test_images)} test rows of {args.shards}")
    print("| readout | PA-MPJPE (mm) | vs mean pose |\n| --- | --- | --- |")
    for name, value in results.items():
        print(f"| {name} | {value:.1f} | {value / mean_pa:.3f}x |")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
