"""Train the synthetic world's person detector (a small YOLO, from scratch, on the CPU).

    python jobs/train_detector.py --world outputs/world --out outputs/detector
    python jobs/train_detector.py --world outputs/world --out outputs/detector epochs=20 image_size=192

Writes the world's images in YOLO's format (``<out>/dataset``), trains (or reuses
weights trained with the same settings and data, under ``<out>/runs/<key>`` or
``--weights-cache``), reports box mAP@0.5 on the world's held-out images
(val and test splits), and writes ``<out>/detector.pt`` with ``<out>/detector.yaml``:
the ``DetectorConfig`` to detect with (``detector.*`` keys of the prepare and serve
configs, e.g. ``detector.weights=<out>/detector.pt detector.image_size=128``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402

DEFAULT_PRESET = REPO / "configs" / "detect" / "tiny.yaml"


def evaluate_held_out(detector: Any, items: Sequence[Any]) -> dict[str, float]:
    """Box AP@0.5 of ``detector`` on labelled images: all, single-person images, multi-person scenes."""
    from PIL import Image

    from pipelines.synthetic.yolo_dataset import gt_boxes
    from posegpt.detect import average_precision

    images = []
    for item in items:
        with Image.open(item.path) as im:
            images.append(im.convert("RGB"))
    start = time.perf_counter()
    predictions = detector.detect(images)
    seconds = time.perf_counter() - start
    truth = gt_boxes(items)
    metrics: dict[str, float] = {
        "map50": average_precision(predictions, truth, 0.5),
        "map50_95": sum(average_precision(predictions, truth, t) for t in [0.5 + 0.05 * k for k in range(10)])
        / 10,
        "held_out_images": float(len(items)),
        "held_out_people": float(sum(len(t) for t in truth)),
        "detect_images_per_s": len(items) / seconds if seconds > 0 else 0.0,
    }
    for kind in ("single", "scene"):
        idx = [i for i, item in enumerate(items) if item.kind == kind]
        if idx and any(len(truth[i]) for i in idx):
            metrics[f"map50_{kind}"] = average_precision(
                [predictions[i] for i in idx], [truth[i] for i in idx]
            )
    return metrics


def run(
    cfg: Any, world: str | Path, out: str | Path, weights_cache: str | Path | None = None
) -> dict[str, Any]:
    """Dataset → training (or reuse) → held-out mAP → ``detector.yaml`` and ``metrics.json``; returns the report."""
    from pipelines.synthetic.yolo_dataset import world_labeled_images, write_yolo_dataset
    from posegpt import tracking
    from posegpt.config import dump_config
    from posegpt.detect import PersonDetector, epoch_curves, train_yolo, trained_detector_config

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    found = world_labeled_images(world)
    dataset = write_yolo_dataset(
        found.items, out / "dataset", cfg.max_images, cfg.seed, cfg.negative_fraction
    )
    trained = train_yolo(cfg, dataset.data_yaml, dataset.digest, Path(weights_cache or out / "runs"))
    # A copy at a fixed path, for configs that name it (detector.weights=<out>/detector.pt).
    weights = out / "detector.pt"
    shutil.copyfile(trained.weights, weights)
    detector_cfg = trained_detector_config(cfg, weights)
    dump_config(detector_cfg, out / "detector.yaml")
    eval_cfg = trained_detector_config(cfg, weights, min_score=cfg.eval_min_score)
    metrics = evaluate_held_out(PersonDetector(eval_cfg), dataset.val)
    report: dict[str, Any] = {
        "weights": str(weights),
        "trained_weights": str(trained.weights),
        "key": trained.key,
        "reused": trained.reused,
        "train_seconds": trained.train_seconds,
        "train_images": len(dataset.train),
        "data_digest": dataset.digest,
        "skipped_images": found.skipped,
        "detector_config": str(out / "detector.yaml"),
        **metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    with tracking.run(
        cfg.tracking, out, run_name="train_detector", tags={tracking.JOB_TAG: "train_detector"}
    ) as active:
        if active is not None:
            import mlflow

            tracking.log_config(cfg)
            mlflow.log_params({"world": str(Path(world).resolve()), "data_digest": dataset.digest})
            mlflow.log_metrics({k: float(v) for k, v in report.items() if isinstance(v, int | float)})
            for epoch, values in epoch_curves(trained):
                mlflow.log_metrics(values, step=epoch)
            for path in (weights, out / "detector.yaml", out / "metrics.json"):
                mlflow.log_artifact(str(path))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", required=True, help="synthetic world folder (written by jobs/synth.py)")
    parser.add_argument(
        "--out", required=True, help="output folder (dataset, weights, detector.yaml, metrics)"
    )
    parser.add_argument(
        "--config", default=str(DEFAULT_PRESET), help="preset YAML (default: configs/detect/tiny.yaml)"
    )
    parser.add_argument(
        "--weights-cache", default=None, help="folder of trained weights by key (default: <out>/runs)"
    )
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache folder (tools' settings)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of DetectorTrainConfig")
    args = parser.parse_args(argv)
    setup_environment(args.cache_dir)

    from posegpt.config import ConfigError, load_config
    from posegpt.detect import DetectorError, DetectorTrainConfig
    from posegpt.tracking import apply_environment

    try:
        cfg = load_config(DetectorTrainConfig, args.config, args.overrides)
        apply_environment(cfg, os.environ)
        report = run(cfg, args.world, args.out, args.weights_cache)
    except (ConfigError, DetectorError, FileNotFoundError, ValueError) as exc:
        print(f"train_detector: {exc}", file=sys.stderr)
        return 2
    print(
        f"train_detector: mAP@0.5={report['map50']:.3f} on {int(report['held_out_images'])} held-out images "
        f"({int(report['held_out_people'])} people); trained on {report['train_images']} images in "
        f"{report['train_seconds']:.0f}s{' (reused)' if report['reused'] else ''}; weights {report['weights']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
