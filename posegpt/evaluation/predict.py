"""Model answers for shard rows, batched across Ray workers.

Ray Data reads the rows' Parquet files (images included; one read task per file)
and streams them through an actor pool (``map_batches`` with ``PosePredictor``):
each actor loads the checkpoint once and answers a batch of queries per call with
``PoseGPT.batch`` (rows of the pose-input tasks give their input poses by value). Every task goes through the same pool, so the model loads once
per actor, not once per task. Only the sample id, the first predicted pose and the
answer text come back to the driver.

The RPE crop baselines are more jobs in that pool: rows of the variant
``gt_crop`` are cut to a square around the row's ground-truth box; rows of the
variant ``detected_crop`` go through the person detector first (everyone in the
whole image), and the detection overlapping the row's box most is cropped, as
the service does for ``detect: true``. A described person the detector misses
gets no answer (``detected`` false) and is scored with the mean pose.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from posegpt.body.skeleton import POSE_DIM
from posegpt.detect import DetectorConfig
from posegpt.evaluation.shards import BBOX_KEYS, POSE_TOKEN, ShardError, query_of, question_for
from posegpt.evaluation.tracking_links import fetch_model_checkpoint
from posegpt.storage import StorageConfig, arrow_filesystem

READ_COLUMNS: tuple[str, ...] = ("sample_id", "conversation", "image", "meta", "caption", "poses")
AS_IS, GT_CROP_VARIANT, DETECTED_CROP_VARIANT = "as_is", "gt_crop", "detected_crop"
VARIANTS: tuple[str, ...] = (AS_IS, GT_CROP_VARIANT, DETECTED_CROP_VARIANT)


@dataclass
class CropSpec:
    """Square crop around a box: side = ``padding`` × the box's longer side, resized to ``size``."""

    size: int = 336
    padding: float = 1.2
    detector: DetectorConfig | None = None
    """Detector of the ``detected_crop`` variant (its own ``padding`` sets that crop's side)."""
    detect_min_iou: float = 0.3
    """Least IoU between a detection and the row's box for it to count as the described person."""


@dataclass
class ModelSpec:
    """What each actor loads (plain values: it is pickled to the workers)."""

    checkpoint: str
    base_model: str | None
    cache_dir: str
    storage: StorageConfig
    tracking_uri: str | None
    device: str
    dtype: str | None
    torch_threads: int
    max_new_tokens: int
    seed: int


@dataclass
class Prediction:
    """One row's answer."""

    pose: np.ndarray | None
    """(72,) the first pose of the answer, None when the answer has no ``<POSE>``."""
    text: str
    detected: bool = True
    """``detected_crop`` rows: whether a detection matched the described person (else no answer)."""


def load_posegpt(spec: ModelSpec) -> Any:
    """The PoseGPT of ``spec``, with load failures turned into errors naming the checkpoint and base model."""
    import torch

    from posegpt.inference import PoseGPT
    from posegpt.model.checkpoint import load_checkpoint

    device = spec.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path = spec.checkpoint
    if path.startswith("models:/"):
        path = fetch_model_checkpoint(path, spec.tracking_uri, spec.cache_dir)
    overrides = [f"base_model={spec.base_model}"] if spec.base_model else None
    try:
        model = load_checkpoint(
            path,
            cache_dir=spec.cache_dir,
            storage=spec.storage,
            device=device,
            dtype=spec.dtype,
            overrides=overrides,
        )
    except (RuntimeError, ValueError, KeyError) as exc:
        base = spec.base_model or "the base model its config.yaml names"
        raise ValueError(f"checkpoint {spec.checkpoint} does not load on {base}: {exc}") from exc
    # Plain linear layers decode faster than LoRA branches; an evaluation never trains.
    model.merge_lora()
    return PoseGPT(model, cache_dir=spec.cache_dir)


def crop_to_box(image: Any, bbox: list[float], spec: CropSpec) -> Any:
    """A square crop centred on ``bbox`` = ``[x0, y0, x1, y1]``, side ``padding`` × its longer side (``posegpt.data.crops``)."""
    from posegpt.data.crops import crop_box

    x0, y0, x1, y1 = bbox
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"bbox {bbox} is empty (expected [x0, y0, x1, y1] with x1 > x0, y1 > y0)")
    center = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    return crop_box(image, center, max(x1 - x0, y1 - y0), spec.padding, spec.size)


@dataclass
class PredictJob:
    """Rows of one task to answer: as-is, with the ground-truth crop, or with the detected crop."""

    task: str
    files: list[str]
    sample_ids: list[str]
    variant: str = AS_IS
    """One of ``VARIANTS``."""
    complete: bool = True
    """The files hold exactly ``sample_ids`` (no filtering needed)."""
    prompt_preset: str | None = None
    """Ask each row with this template preset's question, rebuilt from its caption (``question_for``); None: as written."""
    prompt_seed: int = 0
    """Seed of the preset's per-sample question pick."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"PredictJob.variant must be one of {list(VARIANTS)}, got {self.variant!r}")


class PosePredictor:
    """Ray Data actor: holds one PoseGPT and answers batches of shard rows."""

    def __init__(self, spec: ModelSpec, crop: CropSpec) -> None:
        import torch

        if spec.torch_threads > 0:
            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.crop = crop
        self.model = load_posegpt(spec)
        self._detector: Any = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        from posegpt.inference import GenerationSettings, Query

        start = time.perf_counter()
        ids = [str(x) for x in batch.column("sample_id").to_pylist()]
        convs = batch.column("conversation").to_pylist()
        images = batch.column("image").to_pylist()
        metas = batch.column("meta").to_pylist()
        variants = batch.column("variant").to_pylist()
        tasks = batch.column("task").to_pylist()
        row_poses = batch.column("poses").to_pylist()
        queries, asked = [], []
        detected = [True] * len(ids)
        for i, (sid, conv, img, meta, variant, task, poses) in enumerate(
            zip(ids, convs, images, metas, variants, tasks, row_poses, strict=True)
        ):
            image: Any = img
            if variant == GT_CROP_VARIANT:
                image = crop_to_box(self._decoded(sid, img), self._box(sid, meta), self.crop)
            elif variant == DETECTED_CROP_VARIANT:
                image = self._detected_crop(sid, img, meta)
                if image is None:
                    detected[i] = False
                    continue
            turns, inputs = query_of(conv or [], poses, task, sid)
            queries.append(Query(turns, image, inputs if len(inputs) else None))
            asked.append(i)
        settings = GenerationSettings(
            max_new_tokens=self.spec.max_new_tokens, temperature=0.0, seed=self.spec.seed
        )
        answers = self.model.batch(queries, settings) if queries else []
        poses: list[list[float] | None] = [None] * len(ids)
        texts = [""] * len(ids)
        for i, a in zip(asked, answers, strict=True):
            poses[i] = a.poses[0].astype(np.float32).tolist() if len(a.poses) else None
            texts[i] = a.text
        elapsed = time.perf_counter() - start
        return pa.table(
            {
                "task": batch.column("task"),
                "variant": batch.column("variant"),
                "sample_id": pa.array(ids, pa.string()),
                "pose": pa.array(poses, pa.list_(pa.float32())),
                "text": pa.array(texts, pa.string()),
                "detected": pa.array(detected, pa.bool_()),
                "batch_seconds": pa.array([elapsed] * len(ids), pa.float64()),
                "batch_rows": pa.array([len(ids)] * len(ids), pa.int64()),
            }
        )

    def _decoded(self, sid: str, img: bytes | None) -> Any:
        from posegpt.model.vision_input import decode_image

        if img is None:
            raise ShardError(f"sample {sid!r}: the crop baselines need an image, the row has none")
        return decode_image(img, f"sample {sid}")

    def _box(self, sid: str, meta: str | None) -> list[float]:
        data = json.loads(meta or "{}")
        bbox = next((data[k] for k in BBOX_KEYS if data.get(k) is not None), None)
        if bbox is None:
            raise ShardError(
                f"sample {sid!r}: meta has no person box ({'/'.join(BBOX_KEYS)}) for the crop baselines"
            )
        return [float(v) for v in bbox]

    def _detected_crop(self, sid: str, img: bytes | None, meta: str | None) -> Any:
        """The detected crop of the row's person, or None when no detection overlaps its box enough."""
        from PIL import Image

        from posegpt.detect import PersonDetector, detect_person_crop

        if self.crop.detector is None:
            raise ValueError("the detected-crop baseline needs a detector config (baselines.detector)")
        if self._detector is None:
            self._detector = PersonDetector(self.crop.detector)
        image = self._decoded(sid, img)
        crop = detect_person_crop(
            np.asarray(image),
            self._detector,
            self._box(sid, meta),
            self.crop.size,
            min_iou=self.crop.detect_min_iou,
        )
        return None if crop is None else Image.fromarray(crop.image)


@dataclass
class PredictStats:
    """Timing of one prediction pipeline."""

    rows: int
    seconds: float
    """Wall time of the whole pipeline (reading, actor start-up, generation)."""
    generation_seconds: float
    """Time spent inside the actors' batches, summed over actors."""


def read_shard_files(batch: pa.Table, storage: StorageConfig) -> pa.Table:
    """Ray Data task: the rows of each listed file (only the wanted ids when given), tagged with task and variant."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for item in batch.to_pylist():
        fs, path = arrow_filesystem(item["path"], storage)
        table = pq.read_table(path, columns=list(READ_COLUMNS), filesystem=fs)
        if item["ids"]:
            table = table.filter(
                pc.is_in(table.column("sample_id"), value_set=pa.array(item["ids"], pa.string()))
            )
        if item.get("prompt_preset"):
            # The actor takes the turns before the <POSE> answer as the query, as for shard conversations.
            answer = {"role": "assistant", "content": POSE_TOKEN}
            asked = [
                [
                    *question_for(
                        item["task"], caption, str(sid), item["prompt_preset"], item["prompt_seed"]
                    ),
                    answer,
                ]
                for sid, caption in zip(
                    table.column("sample_id").to_pylist(), table.column("caption").to_pylist(), strict=True
                )
            ]
            index = table.schema.get_field_index("conversation")
            table = table.set_column(index, "conversation", pa.array(asked, table.schema.field(index).type))
        n = table.num_rows
        table = table.append_column("task", pa.array([item["task"]] * n, pa.string()))
        tables.append(table.append_column("variant", pa.array([item["variant"]] * n, pa.string())))
    return pa.concat_tables(tables)


def predict(
    jobs: list[PredictJob],
    spec: ModelSpec,
    batch_size: int,
    concurrency: int,
    num_cpus: float,
    num_gpus: float,
    crop: CropSpec | None = None,
    read_cpus: float = 0.25,
) -> tuple[dict[tuple[str, str], dict[str, Prediction]], PredictStats]:
    """Answers for every job's rows through one actor pool (the model loads once per actor).

    Each shard file is one read task of ``read_cpus`` CPUs (no file-listing
    stage, whose one-CPU task could wait forever behind actors that hold every
    CPU of a small machine). Returns ``{(task, variant): {sample_id: Prediction}}``
    and timings.
    """
    import ray

    if not jobs or not any(j.sample_ids for j in jobs):
        raise ValueError("predict: no rows to answer")
    items = []
    for job in jobs:
        files = job.files
        # Filter by id only where some rows of the files are left out (max_samples).
        ids = [] if job.complete else list(job.sample_ids)
        items += [
            {
                "task": job.task,
                "variant": job.variant,
                "path": f,
                "ids": ids,
                "prompt_preset": job.prompt_preset or "",
                "prompt_seed": job.prompt_seed,
            }
            for f in files
        ]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        read_shard_files,
        fn_kwargs={"storage": spec.storage},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=read_cpus,
        # One reader per actor keeps the pool fed; more only start idle worker processes.
        compute=ray.data.TaskPoolStrategy(size=max(1, concurrency)),
    )
    ds = ds.map_batches(
        PosePredictor,
        fn_constructor_kwargs={"spec": spec, "crop": crop or CropSpec()},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
    )
    start = time.perf_counter()
    rows = ds.take_all()
    seconds = time.perf_counter() - start
    out: dict[tuple[str, str], dict[str, Prediction]] = {(j.task, j.variant): {} for j in jobs}
    generation = 0.0
    for row in rows:
        pose = row["pose"]
        out[(row["task"], row["variant"])][str(row["sample_id"])] = Prediction(
            None if pose is None else np.asarray(pose, dtype=np.float32).reshape(POSE_DIM),
            str(row["text"]),
            bool(row["detected"]),
        )
        generation += float(row["batch_seconds"]) / int(row["batch_rows"])
    for job in jobs:
        missing = set(job.sample_ids) - out[(job.task, job.variant)].keys()
        if missing:
            raise RuntimeError(
                f"{job.task} ({job.variant}): {len(missing)} rows got no answer from the model actors, "
                f"e.g. {sorted(missing)[:3]}"
            )
    return out, PredictStats(rows=len(rows), seconds=seconds, generation_seconds=generation)
