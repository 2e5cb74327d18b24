"""Pretrain the tiny pose encoder on crops of a synthetic world drawn with its own seed.

    python jobs/pretrain_pose_encoder.py --config configs/pose_encoder/tiny.yaml [key=value ...]
    make pose-encoder                      # the same, remaking the shipped weights

Renders ``train_images + val_images`` single-person images with the synthetic
world's renderer (seed ``world_seed``, never the demo's world), crops every person
as the prepare job does (``posegpt.data.crops.crop_box`` around the dataset box), trains
``posegpt.vision.pretrain`` and writes the weights to ``out`` and the provenance
(job, config, world seed, metrics, validation curve, sha256) to ``out`` + ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402

CROP_CACHE = "crops.npz"


def render_crops(cfg, cache_dir: Path):  # type: ignore[no-untyped-def]
    """(crops uint8 (N, S, S, 3), poses (N, 72)) for train and val, cached in ``work_dir``."""
    import numpy as np
    from PIL import Image

    from pipelines.synthetic import SynthConfig
    from pipelines.synthetic.images import ImageTask, render_all
    from posegpt.data.crops import crop_box

    work = Path(cfg.work_dir)
    side = round(max(cfg.encoder.input_height, cfg.encoder.input_width) * cfg.context)
    total = cfg.train_images + cfg.val_images
    key = {
        "world_seed": cfg.world_seed,
        "images": total,
        "occluder_fraction": cfg.occluder_fraction,
        "side": side,
        "context": cfg.context,
    }
    cache = work / CROP_CACHE
    if cache.is_file():
        data = np.load(cache)
        if json.loads(str(data["key"])) == key:
            n = cfg.train_images
            return (data["crops"][:n], data["poses"][:n]), (data["crops"][n:], data["poses"][n:])
    world = SynthConfig(
        seed=cfg.world_seed, images=total, occluder_fraction=cfg.occluder_fraction, workers=cfg.render_workers
    )
    rng = np.random.default_rng([cfg.world_seed, 7])
    tasks = [
        ImageTask(
            "single",
            i,
            "spin",
            "train" if i < cfg.train_images else "val",
            f"images/{i:06d}.jpg",
            bool(rng.random() < cfg.occluder_fraction),
        )
        for i in range(total)
    ]
    t = time.perf_counter()
    # Images already on disk (a run stopped while rendering) are not drawn again: their labels are
    # replayed from the same seeded generator, which draws the person and its place before any pixel.
    done = [task for task in tasks if (work / "world" / "spin" / task.relpath).is_file()]
    todo = [task for task in tasks if not (work / "world" / "spin" / task.relpath).is_file()]
    replayed = {task.index: replay_meta(world, task, cache_dir) for task in done}
    rendered = {m["index"]: m for m in render_all(world, work / "world", todo, str(cache_dir))}
    metas = [replayed.get(i) or rendered[i] for i in range(total)]
    print(f"rendered {len(todo)} images, replayed {len(done)} in {time.perf_counter() - t:.0f} s", flush=True)
    crops = np.empty((total, side, side, 3), dtype=np.uint8)
    poses = np.empty((total, 72), dtype=np.float32)
    for i, meta in enumerate(metas):
        with Image.open(work / "world" / "spin" / meta["imgname"]) as img:
            pixels = np.asarray(img.convert("RGB"))
        # The prepare job's crop (SPIN scale x 200 = the padded box side), widened by ``context``.
        crops[i] = crop_box(pixels, meta["center"], meta["scale"] * 200.0 * cfg.context, 1.0, side)
        poses[i] = np.asarray(meta["pose"], dtype=np.float32)
    np.savez(cache, crops=crops, poses=poses, key=json.dumps(key))
    n = cfg.train_images
    return (crops[:n], poses[:n]), (crops[n:], poses[n:])


_BODY = None


def replay_meta(world, task, cache_dir: Path) -> dict:  # type: ignore[no-untyped-def]
    """The label ``Renderer.single`` gives ``task`` (pose, box centre and SPIN scale), without drawing it."""
    import numpy as np

    from pipelines.synthetic.images import STREAM_IMAGES
    from pipelines.synthetic.scenes import (
        FOCAL_FACTOR,
        box_centre,
        place_single,
        pose_people,
        project_box,
        sample_person,
        spin_scale,
    )
    from posegpt.body.model import default_body_model

    global _BODY
    if _BODY is None:
        _BODY = default_body_model(cache_dir)
    rng = np.random.default_rng([world.seed, STREAM_IMAGES, task.index])
    person = sample_person(rng)
    (verts,) = pose_people(_BODY, [person])
    focal = FOCAL_FACTOR * world.image_size
    box = project_box(verts, place_single(verts, focal, world.image_size, rng), focal, world.image_size)
    return {
        "index": task.index,
        "imgname": task.relpath,
        "center": box_centre(box).tolist(),
        "scale": spin_scale(box),
        "pose": person.camera_pose.reshape(-1).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs" / "pose_encoder" / "tiny.yaml"))
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache folder (body model)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of PoseEncoderPretrainConfig")
    args = parser.parse_args(argv)
    cache = setup_environment(args.cache_dir)

    from safetensors.torch import save_file

    from posegpt.body.model import default_body_model
    from posegpt.config import load_config, to_dict
    from posegpt.vision.pose_encoder import file_sha256
    from posegpt.vision.pretrain import PoseEncoderPretrainConfig, pretrain

    cfg = load_config(PoseEncoderPretrainConfig, args.config, args.overrides)
    cfg.encoder.validate()
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    train, val = render_crops(cfg, cache)
    body = default_body_model(cache)
    result = pretrain(cfg, body, train, val, log=lambda m: print(m, flush=True))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(result.state, str(out), metadata={"kind": cfg.encoder.kind, "world_seed": str(cfg.world_seed)})
    provenance = {
        "job": "jobs/pretrain_pose_encoder.py",
        "config": to_dict(cfg),
        "data": {
            "world_seed": cfg.world_seed,
            "note": "a synthetic world drawn with its own seed (the demo's world uses seed 0): "
            "no demo image, of any split, is seen",
            "train_images": cfg.train_images,
            "val_images": cfg.val_images,
        },
        "metrics": result.metrics,
        "curve": result.curve,
        "file": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
    }
    out.with_suffix(out.suffix + ".json").write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result.metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
