"""Write the whole synthetic world into one folder (see the package docstring for the layout)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.synthetic import images, instructions, posefix, posescript
from pipelines.synthetic.config import SynthConfig
from pipelines.synthetic.writers import write_json
from posegpt.body.model import BodyModel, default_body_model
from posegpt.config import to_dict

WORLD_FORMAT_VERSION = 1
STREAM_IMAGE_SPLITS, STREAM_SCENE_SPLITS = 31, 32


@dataclass
class WorldSummary:
    """What ``write_world`` wrote: the manifest (also in ``world.json``) and stage timings."""

    root: Path
    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def _image_splits(cfg: SynthConfig, n: int, stream: int) -> list[str]:
    return posescript.split_labels(n, cfg, np.random.default_rng([cfg.seed, stream]))


def write_world(cfg: SynthConfig, out: str | Path, cache_dir: str | Path | None = None) -> WorldSummary:
    """Write every raw dataset of the synthetic world under ``out`` (created if missing)."""
    cfg.validate()
    root = Path(out).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    cache = None if cache_dir is None else str(Path(cache_dir).expanduser().resolve())
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    body = (
        default_body_model(cache)
        if not cfg.body.model_path
        else BodyModel(cfg.body.model_path, cache_dir=cache)
    )
    sequences = posescript.make_sequences(cfg)
    records = posescript.make_pose_records(sequences)
    posescript.write_amass(root / "amass", sequences, body)
    seconds["amass"] = time.perf_counter() - start

    t = time.perf_counter()
    posescript.caption_records(cfg, records, body)
    v2 = posescript.write_posescript_v2(root / "posescript", cfg, records)
    v1 = posescript.write_posescript_v1(root / "posescript_v1", cfg, records)
    spg = posescript.write_spg(root / "spg", cfg, records)
    seconds["captions"] = time.perf_counter() - t
    pairs = None
    if cfg.pose_pairs:
        t = time.perf_counter()
        pairs = posefix.write_posefix(root / "posefix", cfg, records, body)
        seconds["pose_pairs"] = time.perf_counter() - t

    t = time.perf_counter()
    image_tasks = images.plan_images(cfg, _image_splits(cfg, cfg.images, STREAM_IMAGE_SPLITS))
    scene_tasks = images.plan_scenes(cfg, _image_splits(cfg, cfg.rpe_scenes, STREAM_SCENE_SPLITS))
    metas = images.render_all(cfg, root, image_tasks + scene_tasks, cache)
    singles, scenes = metas[: len(image_tasks)], metas[len(image_tasks) :]
    seconds["render"] = time.perf_counter() - t

    t = time.perf_counter()
    no_pose = images.no_pose_rows(cfg, len(singles))
    image_sets: dict[str, dict[str, Any]] = {"spin": {}, "hmr2": {}}
    writers = {"spin": images.write_spin, "hmr2": images.write_hmr2}
    for dataset, writer in writers.items():
        for split in posescript.SPLITS:
            rows = [m for m in singles if m["dataset"] == dataset and m["split"] == split]
            if not rows:
                continue
            flags = np.array([no_pose[m["index"]] for m in rows], dtype=bool)
            path = writer(root / dataset, split, rows, flags)
            image_sets[dataset][split] = {
                "npz": str(path.relative_to(root)),
                "image_root": dataset,
                "rows": len(rows),
                "without_pose": int(flags.sum()),
            }
    rpe_sets = {}
    for split in posescript.SPLITS:
        split_scenes = [s for s in scenes if s["split"] == split]
        count = images.write_rpe(root / "rpe", split, split_scenes, cfg)
        rpe_sets[split] = {
            "json": f"rpe/rpe_{split}.json",
            "image_root": "rpe",
            "entries": count,
            "images": len(split_scenes),
        }
    llava_rows = instructions.build_instructions(
        cfg.seed, cfg.llava_rows, cfg.text_only_fraction, singles, scenes, records
    )
    write_json(root / "llava" / "llava_v1_5_mix665k.json", llava_rows, indent=1)
    seconds["files"] = time.perf_counter() - t

    manifest: dict[str, Any] = {
        "format_version": WORLD_FORMAT_VERSION,
        "config": to_dict(cfg),
        "amass": {
            "root": "amass",
            "sequences": len(sequences),
            "renames": posescript.AMASS_RENAMES,
            "stored_under_old_names": sum(
                s.stored_dataset != posescript.AMASS_RENAMES[s.old_dataset] for s in sequences
            ),
        },
        "posescript_v2": {"root": "posescript", **v2},
        "posescript_v1": {"root": "posescript_v1", **v1},
        "spg": {split: {"json": f"spg/spg_{split}.json", "entries": n} for split, n in spg.items()},
        "spin": image_sets["spin"],
        "hmr2": image_sets["hmr2"],
        "rpe": rpe_sets,
        "llava": {
            "json": "llava/llava_v1_5_mix665k.json",
            "image_root": ".",
            "rows": len(llava_rows),
            "text_only": sum("image" not in r for r in llava_rows),
        },
        "image_rows": len(singles),
    }
    if pairs is not None:
        manifest["posefix"] = {"root": "posefix", **pairs}
    write_json(root / "world.json", manifest, indent=1)
    seconds["total"] = time.perf_counter() - start
    return WorldSummary(root, manifest, seconds)
