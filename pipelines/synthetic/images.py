"""Rendered image datasets: SPIN-style and HMR2-style npz files, and multi-person ``rpe`` scenes.

Rendering runs in ``SynthConfig.workers`` processes; every image draws from its
own seeded generator (seed, stream, index), so the bytes do not depend on the
number of workers or the order in which they finish.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.synthetic.appearance import BodyPaint, background, draw_occluder
from pipelines.synthetic.captioner import Posecodes, arm_clauses
from pipelines.synthetic.config import SynthConfig
from pipelines.synthetic.poses import ACTIVITIES, ACTIVITY_BY_NAME
from pipelines.synthetic.posescript import SPLITS
from pipelines.synthetic.scenes import (
    FOCAL_FACTOR,
    SPIN_PADDING,
    Person,
    box_centre,
    place_row,
    place_single,
    pose_people,
    project_box,
    render_people,
    sample_person,
    spin_scale,
)
from pipelines.synthetic.threads import single_thread
from pipelines.synthetic.writers import rounded, write_jpeg, write_json, write_npz
from posegpt.body.model import BodyModel, default_body_model
from posegpt.body.skeleton import NUM_BETAS, POSE_DIM

STREAM_IMAGES, STREAM_SCENES, STREAM_IMAGE_PLAN = 11, 12, 13
SINGLE_SIDE_TINT = 0.25
SCENE_SIDE_TINT = 0.15
CHUNK = 16
POSITIONS = {2: ("left", "right"), 3: ("left", "middle", "right")}
POSITION_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}


@dataclass(frozen=True)
class ImageTask:
    """One single-person image to render (``kind="single"``) or one multi-person scene (``"scene"``)."""

    kind: str
    index: int
    dataset: str
    split: str
    relpath: str
    """Image path relative to the dataset folder (``spin/``, ``hmr2/`` or ``rpe/``)."""
    occluded: bool = False
    people: int = 1


def _codes_dict(person: Person) -> dict[str, Any]:
    return dataclasses.asdict(person.codes) if person.codes is not None else {}


def _person_meta(person: Person, box: np.ndarray) -> dict[str, Any]:
    return {
        "activity": person.activity.name,
        "canonical": rounded(person.canonical.reshape(-1)),
        "pose": rounded(person.camera_pose.reshape(-1)),
        "betas": rounded(person.betas),
        "bbox": rounded(box, 2),
        "center": rounded(box_centre(box), 2),
        "scale": round(spin_scale(box), 6),
        "yaw": round(person.yaw_deg, 3),
        "facing": person.facing,
        "outfit": {
            "shirt": person.outfit.shirt,
            "trousers": person.outfit.trousers,
            "shoes": person.outfit.shoes,
            "long_sleeves": person.outfit.long_sleeves,
            "text": person.outfit.describe(),
        },
        "codes": _codes_dict(person),
    }


class Renderer:
    """Renders image tasks with one body model and writes the JPEGs under ``out``."""

    def __init__(self, cfg: SynthConfig, out: Path, cache_dir: str | None) -> None:
        self.cfg = cfg
        self.out = out
        self.body = (
            default_body_model(cache_dir)
            if not cfg.body.model_path
            else BodyModel(cfg.body.model_path, cache_dir=cache_dir)
        )
        rest = self.body.smpl.v_template.detach().cpu().numpy()
        self.paint = BodyPaint(self.body.faces, self.body.skinning_weights.detach().cpu().numpy(), rest)
        self.size = cfg.image_size
        self.focal = FOCAL_FACTOR * cfg.image_size

    def single(self, task: ImageTask) -> dict[str, Any]:
        rng = np.random.default_rng([self.cfg.seed, STREAM_IMAGES, task.index])
        person = sample_person(rng)
        (verts,) = pose_people(self.body, [person])
        t = place_single(verts, self.focal, self.size, rng)
        bg, kind = background(rng, self.size)
        colors = self.paint.face_colors(person.outfit, SINGLE_SIDE_TINT)
        image = render_people([verts], [t], [colors], self.paint, self.size, bg)
        box = project_box(verts, t, self.focal, self.size)
        occluder = None
        if task.occluded:
            image, occ = draw_occluder(image, (box[0], box[1], box[2], box[3]), rng)
            occluder = occ.describe()
        write_jpeg(self.out / task.dataset / task.relpath, image, self.cfg.jpeg_quality)
        meta = _person_meta(person, box)
        meta.update(
            {
                "index": task.index,
                "dataset": task.dataset,
                "split": task.split,
                "imgname": task.relpath,
                "background": kind,
                "occluder": occluder,
            }
        )
        return meta

    def scene(self, task: ImageTask) -> dict[str, Any]:
        rng = np.random.default_rng([self.cfg.seed, STREAM_SCENES, task.index])
        upright = tuple(a for a in ACTIVITIES if a.upright)
        chosen = rng.choice(len(upright), size=task.people, replace=False)
        # Heights spread apart (beta 0 is stature) so "the tallest person" means one person.
        statures = rng.permutation(np.linspace(-1.6, 1.6, task.people)) + rng.uniform(-0.2, 0.2, task.people)
        people: list[Person] = []
        for k in range(task.people):
            p = sample_person(
                rng,
                activities=(upright[int(chosen[k])],),
                avoid_shirts=tuple(q.outfit.shirt for q in people),
                pitch_deg=0.0,
            )
            p.betas[0] = statures[k]
            people.append(p)
        verts = pose_people(self.body, people)
        trans = place_row(verts, self.focal, self.size, rng)
        bg, kind = background(rng, self.size)
        colors = [self.paint.face_colors(p.outfit, SCENE_SIDE_TINT) for p in people]
        image = render_people(verts, trans, colors, self.paint, self.size, bg)
        write_jpeg(self.out / task.dataset / task.relpath, image, self.cfg.jpeg_quality)
        with single_thread():
            rest = self.body.rest_joints(
                torch.as_tensor(np.stack([p.betas for p in people]), dtype=torch.float32)
            )
        heights = (rest[:, 15, 1] - rest[:, 10:12, 1].min(dim=1).values).numpy()
        metas = []
        for k, (p, v, t) in enumerate(zip(people, verts, trans, strict=True)):
            m = _person_meta(p, project_box(v, t, self.focal, self.size))
            m["position"] = POSITIONS[task.people][k]
            m["stature"] = round(float(heights[k]), 4)
            metas.append(m)
        return {
            "index": task.index,
            "dataset": task.dataset,
            "split": task.split,
            "image": task.relpath,
            "background": kind,
            "people": metas,
        }

    def run(self, task: ImageTask) -> dict[str, Any]:
        return self.single(task) if task.kind == "single" else self.scene(task)


_WORKER: Renderer | None = None


def _init_worker(cfg: SynthConfig, out: str, cache_dir: str | None) -> None:
    global _WORKER
    # One thread per worker: the workers themselves use the cores.
    torch.set_num_threads(1)
    _WORKER = Renderer(cfg, Path(out), cache_dir)


def _run_chunk(tasks: list[ImageTask]) -> list[dict[str, Any]]:
    assert _WORKER is not None, "worker not initialised"
    return [_WORKER.run(t) for t in tasks]


def render_all(
    cfg: SynthConfig, out: Path, tasks: list[ImageTask], cache_dir: str | None
) -> list[dict[str, Any]]:
    """Render every task (in ``cfg.workers`` processes) and return their metadata in task order."""
    if not tasks:
        return []
    if cfg.workers == 1:
        renderer = Renderer(cfg, out, cache_dir)
        return [renderer.run(t) for t in tasks]
    chunks = [tasks[i : i + CHUNK] for i in range(0, len(tasks), CHUNK)]
    # "spawn": a forked child would inherit torch's thread pools, which can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, str(out), cache_dir)
    ) as pool:
        results: Iterator[list[dict[str, Any]]] = pool.map(_run_chunk, chunks)
        return [meta for chunk in results for meta in chunk]


def plan_images(cfg: SynthConfig, splits: list[str]) -> list[ImageTask]:
    """Single-person tasks: dataset (SPIN or HMR2), split, occluder, file name."""
    rng = np.random.default_rng([cfg.seed, STREAM_IMAGE_PLAN, 0])
    tasks = []
    for i in range(cfg.images):
        dataset = "hmr2" if rng.random() < cfg.hmr2_fraction else "spin"
        occluded = bool(rng.random() < cfg.occluder_fraction)
        tasks.append(ImageTask("single", i, dataset, splits[i], f"images/{splits[i]}/{i:06d}.jpg", occluded))
    return tasks


def plan_scenes(cfg: SynthConfig, splits: list[str]) -> list[ImageTask]:
    rng = np.random.default_rng([cfg.seed, STREAM_IMAGE_PLAN, 1])
    return [
        ImageTask(
            "scene", i, "rpe", splits[i], f"images/{splits[i]}/{i:05d}.jpg", people=int(rng.integers(2, 4))
        )
        for i in range(cfg.rpe_scenes)
    ]


def no_pose_rows(cfg: SynthConfig, n: int) -> np.ndarray:
    """(n,) bool: rows written without pose ground truth (``has_smpl`` 0)."""
    return np.random.default_rng([cfg.seed, STREAM_IMAGE_PLAN, 2]).random(n) < cfg.no_pose_fraction


def write_spin(folder: Path, split: str, metas: list[dict[str, Any]], no_pose: np.ndarray) -> Path:
    """SPIN-style ``{split}.npz``: imgname, center (N,2), scale (N,) = box/200, pose (N,72), shape (N,10), has_smpl."""
    n = len(metas)
    pose = np.array([m["pose"] for m in metas], dtype=np.float64).reshape(n, POSE_DIM)
    pose[no_pose] = 0.0
    return write_npz(
        folder / f"{split}.npz",
        {
            "imgname": np.array([m["imgname"] for m in metas], dtype=str),
            "center": np.array([m["center"] for m in metas], dtype=np.float64).reshape(n, 2),
            "scale": np.array([m["scale"] for m in metas], dtype=np.float64),
            "pose": pose,
            "shape": np.array([m["betas"] for m in metas], dtype=np.float64).reshape(n, NUM_BETAS),
            "has_smpl": (~no_pose).astype(np.float64),
            # Tight person box (not in SPIN's files, which readers ignore): labels for the detector.
            "bbox": np.array([m["bbox"] for m in metas], dtype=np.float64).reshape(n, 4),
        },
    )


def write_hmr2(folder: Path, split: str, metas: list[dict[str, Any]], no_pose: np.ndarray) -> Path:
    """HMR2-style ``{split}.npz``: scale in pixels, (N,2) [width, height] for train and (N,) elsewhere.

    Both shapes occur in HMR 2.0's files, so the synthetic world writes both.
    """
    n = len(metas)
    boxes = np.array([m["bbox"] for m in metas], dtype=np.float64).reshape(n, 4)
    wh = SPIN_PADDING * np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    scale = wh if split == "train" else wh.max(axis=1)
    body_pose = np.array([m["pose"] for m in metas], dtype=np.float64).reshape(n, POSE_DIM)
    body_pose[no_pose] = 0.0
    return write_npz(
        folder / f"{split}.npz",
        {
            "imgname": np.array([m["imgname"] for m in metas], dtype=str),
            "center": np.array([m["center"] for m in metas], dtype=np.float64).reshape(n, 2),
            "scale": np.round(scale, 2),
            "body_pose": body_pose,
            "has_body_pose": (~no_pose).astype(np.float64),
            "betas": np.array([m["betas"] for m in metas], dtype=np.float64).reshape(n, NUM_BETAS),
            "has_betas": np.ones(n),
            "bbox": boxes,  # tight person box (not in HMR2's files): labels for the detector
        },
    )


def _shape_phrase(stature: float, all_statures: list[float]) -> str:
    rank = sorted(all_statures).index(stature)
    if len(all_statures) == 2:
        return ("The shorter of the two people.", "The taller of the two people.")[rank]
    return (
        "The shortest person in the image.",
        "The person of middle height.",
        "The tallest person in the image.",
    )[rank]


def rpe_entries(scene: dict[str, Any], size: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One ``rpe`` entry per person of a scene: the person's box and pose, and five descriptions of them."""
    entries = []
    statures = [p["stature"] for p in scene["people"]]
    for p in scene["people"]:
        act = ACTIVITY_BY_NAME[p["activity"]]
        codes = Posecodes(**p["codes"])
        where = POSITION_PHRASES[p["position"]]
        implicit = act.implicit[int(rng.integers(len(act.implicit)))]
        clauses = arm_clauses(codes, rng)
        # Where the hands are tells people apart better than the elbows: prefer that clause.
        arm = clauses[1][0] if len(clauses) > 1 and clauses[1][1] else clauses[0][0]
        entries.append(
            {
                "image": scene["image"],
                "width": size,
                "height": size,
                "num_people": len(scene["people"]),
                "person": {
                    "center": p["center"],
                    "scale": p["scale"],
                    "bbox": p["bbox"],
                    "pose": p["pose"],
                    "betas": p["betas"],
                    "activity": p["activity"],
                    "position": p["position"],
                },
                "descriptions": {
                    "behaviour": implicit[0].upper() + implicit[1:] + ".",
                    "outfit": f"The person wearing {p['outfit']['text']}.",
                    "pose": f"The person who {act.phrase}; {arm}.",
                    "shape": _shape_phrase(p["stature"], statures),
                    "summary": f"The person {where}, in the {p['outfit']['shirt']} shirt, who {act.phrase}.",
                },
            }
        )
    return entries


def write_rpe(folder: Path, split: str, scenes: list[dict[str, Any]], cfg: SynthConfig) -> int:
    rng = np.random.default_rng([cfg.seed, STREAM_SCENES, 10_000 + SPLITS.index(split)])
    entries = [e for s in scenes for e in rpe_entries(s, cfg.image_size, rng)]
    write_json(folder / f"rpe_{split}.json", entries, indent=1)
    return len(entries)
