"""The evaluation: read shards, run the model on Ray, score it and the baselines, report, log.

``evaluate(cfg)`` is what ``jobs/evaluate.py`` calls. Steps:

1. Check the checkpoint against its base model (headers only) and read the rows
   of every task (ground truth, prompts, captions; not the images) — bad input
   fails here, before any worker starts.
2. The retrieval model: loaded from ``retrieval.model_dir``, or trained on the
   ``text2pose`` training split (reused from ``<output_dir>/retrieval`` while its
   training data and config are unchanged).
3. Model answers through Ray Data actors (``predict.py``), per task; for RPE also
   with the ground-truth crop when rows carry a box.
4. Scores of the model and the baselines, retrieval recalls, groups; the pose-input
   tasks (``pose2text``, ``posediff``, ``poseedit``) in ``pose_inputs.py``.
5. The report folder and an MLflow run linked to the training run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from posegpt.body.model import BodyModel
from posegpt.body.skeleton import POSE_DIM
from posegpt.config import to_dict
from posegpt.data.templates import DEFAULT_PRESET
from posegpt.evaluation import tracking_links as links
from posegpt.evaluation.baselines import NearestNeighbour, mean_pose
from posegpt.evaluation.checkpoint_check import CheckpointInfo, check_checkpoint
from posegpt.evaluation.config import (
    POSE_INPUT_EVAL_TASKS,
    RECALL_TASKS,
    SHARD_PROMPTS,
    TEXT_TASKS,
    EvalConfig,
)
from posegpt.evaluation.examples import CASES, BodyRenderer, pick_cases, read_images, render_example
from posegpt.evaluation.joints_source import read_spin_joints, write_query_shard
from posegpt.evaluation.pose_inputs import render_pose_input_examples, score_pose_input_task
from posegpt.evaluation.predict import (
    DETECTED_CROP_VARIANT,
    GT_CROP_VARIANT,
    CropSpec,
    ModelSpec,
    Prediction,
    PredictJob,
    predict,
)
from posegpt.evaluation.report import write_report
from posegpt.evaluation.results import (
    DETECTED_CROP,
    GT_CROP,
    MEAN_POSE,
    MODEL,
    NEAREST,
    EvalResult,
    MethodResult,
    TaskResult,
)
from posegpt.evaluation.scoring import PoseScorer, grouped_means, load_h36m_regressor
from posegpt.evaluation.shards import (
    TEXT_ANSWER_TASKS,
    ShardError,
    TaskRows,
    list_shard_files,
    prompt_turns,
    read_manifest,
    read_task_rows,
    subset_indices,
)
from posegpt.retrieval import RECALL_KS, TextPoseRetrieval, chance_recall
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.storage import is_s3

RETRIEVAL_TASK = "text2pose"
"""The task whose captions train the retrieval model and whose test split is its gallery."""
JOINTS_MEAN_POSE_FROM = "image2pose"
"""Training task whose mean pose answers a joints-only source (unless ``baselines.mean_pose_from`` names one)."""


def _log(msg: str) -> None:
    print(f"[evaluate] {msg}", flush=True)


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Run the whole evaluation of ``cfg.checkpoint``; returns the numbers (also in the report and MLflow)."""
    if not cfg.checkpoint:
        raise ValueError("checkpoint is not set: pass checkpoint=<dir | s3://... | models:/name/version>")
    cfg.validate()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else DEFAULT_CACHE_DIR
    out_dir = Path(cfg.output_dir)
    if is_s3(cfg.output_dir):
        raise ValueError(
            f"output_dir must be a local folder (the report is written there), got {cfg.output_dir}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = _tracking_uri(cfg)

    # 1. checkpoint and rows -------------------------------------------------------------
    location, worker_checkpoint = _checkpoint_location(cfg, cache_dir, tracking_uri)
    info = check_checkpoint(cfg.checkpoint, location, cfg.base_model, cfg.storage)
    _log(f"checkpoint {cfg.checkpoint} fits base model {info.base_model}")
    train_run_id = _train_run_id(cfg, info, tracking_uri)

    tasks: dict[str, TaskRows] = {}
    skipped: dict[str, str] = {}
    preset = None if cfg.data.prompts == SHARD_PROMPTS else cfg.data.prompts
    for task in cfg.data.tasks:
        try:
            rows = read_task_rows(
                cfg.data.shard_root,
                task,
                cfg.data.split,
                cfg.storage,
                need_captions=task in RECALL_TASKS or (preset is not None and task != "image2pose"),
                max_rows=cfg.data.max_samples,
            )
            if cfg.data.subset and task in cfg.data.subset_tasks:
                rows = rows.subset_per_source(cfg.data.subset, cfg.data.subset_seed)
            tasks[task] = rows if preset is None else rows.rephrased(preset, cfg.seed)
        except ShardError as exc:
            if cfg.data.skip_missing_tasks and not list_shard_files(
                cfg.data.shard_root, task, cfg.data.split, cfg.storage
            ):
                skipped[task] = str(exc)
                _log(f"skipping {task}: {exc}")
                continue
            raise
        _log(f"{task}/{cfg.data.split}: {len(tasks[task])} rows")
    joint_tasks, joint_gt = _joint_sources(cfg, out_dir, preset or DEFAULT_PRESET)
    if not tasks and not joint_tasks:
        raise ShardError(
            f"none of the tasks {cfg.data.tasks} has a {cfg.data.split!r} split in {cfg.data.shard_root}"
        )

    # The body model and the H36M regressor are loaded before the model runs: a bad path fails here.
    body = BodyModel(cfg.metrics.body_model or None, cache_dir=cache_dir)
    regressor = (
        load_h36m_regressor(cfg.metrics.h36m_regressor, body.num_vertices)
        if cfg.metrics.h36m_regressor
        else None
    )
    scorer = PoseScorer(body, regressor)

    # Training poses of each task that gives a mean pose (read once per task).
    train_rows: dict[str, TaskRows] = {}

    def train_of(task: str, need_captions: bool = False) -> TaskRows:
        if task not in train_rows:
            train_rows[task] = read_task_rows(
                cfg.data.shard_root, task, cfg.data.train_split, cfg.storage, need_captions=need_captions
            )
        return train_rows[task]

    means: dict[str, np.ndarray] = {}
    for task in [*tasks, *joint_tasks]:
        if task in TEXT_ANSWER_TASKS:
            continue  # answered in words: no pose to stand in for
        source = _mean_pose_task(cfg, task, joint_tasks)
        if source not in means:
            means[source] = mean_pose(train_of(source).poses)

    # 2. retrieval model -----------------------------------------------------------------
    needs_retrieval = any(t in RECALL_TASKS or t in TEXT_ANSWER_TASKS for t in tasks) or (
        cfg.baselines.nearest_neighbour and any(t in TEXT_TASKS or t == "poseedit" for t in tasks)
    )
    retrieval: TextPoseRetrieval | None = None
    retrieval_dir: Path | None = None
    if needs_retrieval:
        retrieval, retrieval_dir = _retrieval_model(
            cfg, train_of(RETRIEVAL_TASK, need_captions=True), cache_dir, out_dir
        )

    # 3. model answers -------------------------------------------------------------------
    import ray

    if not ray.is_initialized():
        ray.init()
    spec = ModelSpec(
        checkpoint=worker_checkpoint,
        base_model=cfg.base_model,
        cache_dir=str(Path(cache_dir).resolve()),
        storage=cfg.storage,
        tracking_uri=tracking_uri,
        device=cfg.inference.device,
        dtype=cfg.inference.dtype,
        torch_threads=cfg.inference.torch_threads,
        max_new_tokens=cfg.inference.max_new_tokens,
        seed=cfg.seed,
    )
    inf = cfg.inference
    result = EvalResult(checkpoint=cfg.checkpoint, tasks={}, skipped=skipped, train_run_id=train_run_id)
    jobs = [
        PredictJob(
            task,
            rows.files,
            rows.sample_ids,
            complete=rows.complete,
            # Every preset phrases the pose-input tasks alike: they are asked as the shard wrote them.
            prompt_preset=None if task in POSE_INPUT_EVAL_TASKS else preset,
            prompt_seed=cfg.seed,
        )
        for task, rows in tasks.items()
    ]
    jobs += [PredictJob(name, rows.files, rows.sample_ids) for name, rows in joint_tasks.items()]
    for task, rows in tasks.items():
        result.tasks[task] = TaskResult(task, rows)
        if task != "rpe" or not (cfg.baselines.rpe_gt_crop or cfg.baselines.rpe_detected_crop):
            continue
        boxes = rows.bboxes()
        missing_boxes = sum(b is None for b in boxes)
        if missing_boxes:
            result.tasks[task].notes.append(
                f"crop baselines not run: {missing_boxes} of {len(boxes)} rows carry no person box in meta"
            )
            continue
        if cfg.baselines.rpe_gt_crop:
            jobs.append(
                PredictJob(
                    task, rows.files, rows.sample_ids, GT_CROP_VARIANT, rows.complete, preset, cfg.seed
                )
            )
        if cfg.baselines.rpe_detected_crop and cfg.baselines.detector.weights:
            if not Path(cfg.baselines.detector.weights).expanduser().is_file():
                raise FileNotFoundError(
                    f"baselines.detector.weights: {cfg.baselines.detector.weights} does not exist"
                )
            jobs.append(
                PredictJob(
                    task, rows.files, rows.sample_ids, DETECTED_CROP_VARIANT, rows.complete, preset, cfg.seed
                )
            )
        elif cfg.baselines.rpe_detected_crop:
            result.tasks[task].notes.append(
                "detected-crop baseline not run: baselines.detector.weights is empty"
            )
    total = sum(len(j.sample_ids) for j in jobs)
    _log(
        f"answering {total} queries ({', '.join(f'{j.task}/{j.variant}' for j in jobs)}) on {inf.concurrency} Ray actors"
    )
    answers, stats = predict(
        jobs,
        spec,
        inf.batch_size,
        inf.concurrency,
        inf.num_cpus,
        inf.num_gpus,
        CropSpec(
            cfg.baselines.gt_crop_size,
            cfg.baselines.gt_crop_padding,
            cfg.baselines.detector if cfg.baselines.detector.weights else None,
            cfg.baselines.detect_min_iou,
        ),
        read_cpus=inf.read_cpus,
    )
    result.samples = stats.rows
    result.predict_seconds = stats.seconds
    result.generation_seconds = stats.generation_seconds
    _log(f"{stats.rows} answers in {stats.seconds:.1f} s ({result.samples_per_second:.2f} samples/s)")
    predictions = {task: answers[(task, "as_is")] for task in [*tasks, *joint_tasks]}
    crop_predictions = {
        (task, method): answers[(task, variant)]
        for task in tasks
        for method, variant in ((GT_CROP, GT_CROP_VARIANT), (DETECTED_CROP, DETECTED_CROP_VARIANT))
        if (task, variant) in answers
    }

    # 4. scores --------------------------------------------------------------------------
    nearest: NearestNeighbour | None = None
    if retrieval is not None and cfg.baselines.nearest_neighbour:
        tr = train_of(RETRIEVAL_TASK, need_captions=True)
        nearest = NearestNeighbour(retrieval, tr.poses, [c or "" for c in tr.captions])
    for name, rows in joint_tasks.items():
        result.tasks[name] = TaskResult(name, rows, joints=joint_gt[name])
        _score_joint_task(
            cfg, result.tasks[name], predictions[name], means[_mean_pose_task(cfg, name, joint_tasks)], scorer
        )
    for task, rows in tasks.items():
        if task in POSE_INPUT_EVAL_TASKS:
            score_pose_input_task(
                result.tasks[task],
                predictions[task],
                scorer,
                retrieval,
                lambda task=task: train_of(task, need_captions=True),
                means.get(cfg.baselines.mean_pose_from.get(task, task)) if cfg.baselines.mean_pose else None,
                cfg.baselines.nearest_neighbour,
            )
            if task in TEXT_ANSWER_TASKS:
                result.tasks[task].notes.append(_text_summary(result.tasks[task], len(rows)))
            continue
        _score_task(
            cfg,
            result.tasks[task],
            predictions[task],
            {m: p for (t, m), p in crop_predictions.items() if t == task},
            means[cfg.baselines.mean_pose_from.get(task, task)],
            scorer,
            retrieval,
            nearest,
        )
        if task == RETRIEVAL_TASK and retrieval is not None:
            result.retrieval_chance = {k: chance_recall(k, len(rows)) for k in RECALL_KS}
    result.retrieval_dir = retrieval_dir

    # 5. report and MLflow ---------------------------------------------------------------
    report_dir = Path(cfg.report_dir) if cfg.report_dir else out_dir / "report"
    result.report_dir = report_dir
    examples = (
        _render_examples(cfg, result, predictions, body, report_dir) if cfg.report.render_examples else {}
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "eval_config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    if cfg.tracking.enabled:
        _log_mlflow(cfg, result, info, tracking_uri, report_dir, examples)
    else:
        write_report(result, report_dir, cfg.report.decimals, examples)
    _log(f"report: {report_dir / 'report.md'}")
    return result


def _score_task(
    cfg: EvalConfig,
    tres: TaskResult,
    preds: dict[str, Prediction],
    crop_preds: dict[str, dict[str, Prediction]],
    fallback: np.ndarray,
    scorer: PoseScorer,
    retrieval: TextPoseRetrieval | None,
    nearest: NearestNeighbour | None,
) -> None:
    """Score the model and every baseline on one task (fills ``tres``)."""
    task, rows = tres.task, tres.rows
    h36m = scorer.h36m is not None and task in cfg.metrics.h36m_tasks
    types = rows.description_types()
    methods: dict[str, tuple[np.ndarray, int]] = {MODEL: _stack(rows, preds, fallback)}
    for method, method_preds in crop_preds.items():
        methods[method] = _stack(rows, method_preds, fallback)
        missed = sum(not method_preds[s].detected for s in rows.sample_ids)
        if method == DETECTED_CROP:
            tres.notes.append(
                f"detected crop: {len(rows) - missed} of {len(rows)} described people detected "
                f"(IoU ≥ {cfg.baselines.detect_min_iou}); the {missed} missed are scored with the mean pose"
            )
    if cfg.baselines.mean_pose:
        methods[MEAN_POSE] = (np.repeat(fallback[None], len(rows), axis=0), 0)
    if nearest is not None and task in TEXT_TASKS:
        methods[NEAREST] = (nearest.predict(rows.query_texts()), 0)
    if methods[MODEL][1]:
        tres.notes.append(
            f"{methods[MODEL][1]} of {len(rows)} answers had no <POSE>; they are scored with the mean training pose"
        )
    captions = [c or "" for c in rows.captions]
    for method, (poses, missing) in methods.items():
        scores = scorer.score(rows.sample_ids, poses, rows.poses, h36m=h36m)
        mr = MethodResult(method, scores, missing_poses=missing, poses=np.asarray(poses, np.float32))
        mr.by_source = grouped_means(scores, rows.sources)
        if types is not None:
            mr.by_type = grouped_means(scores, [t or "unspecified" for t in types])
        if task in RECALL_TASKS and retrieval is not None:
            mr.recalls = retrieval.recalls(captions, poses)
        tres.methods[method] = mr
    if task in RECALL_TASKS and retrieval is not None:
        tres.gt_recalls = retrieval.recalls(captions, rows.poses)
    if task == "rpe" and types is None:
        tres.notes.append("rows carry no description type in meta, so RPE is not broken down by type")
    _log(
        f"{task}: "
        + ", ".join(f"{m} PA-MPJPE {r.means()['pa_mpjpe']:.1f} mm" for m, r in tres.methods.items())
    )


def _text_summary(tres: TaskResult, n: int) -> str:
    extra = tres.extra
    line = (
        f"{n} answers in words: BLEU-1 {extra['bleu1']:.1f}, BLEU-4 {extra['bleu4']:.1f}, "
        f"ROUGE-L {extra['rougeL']:.1f} against the reference"
    )
    if "pair_r_10" in extra:
        line += (
            f"; pair recall (the model's text retrieves its own pair among the {n} by the reference modifiers) "
            f"R@10 {extra['pair_r_10']:.1f} % (chance {extra['pair_r_10_chance']:.1f} %)"
        )
    _log(f"{tres.task}: {line}")
    return line


def _mean_pose_task(cfg: EvalConfig, task: str, joint_tasks: dict[str, TaskRows]) -> str:
    default = JOINTS_MEAN_POSE_FROM if task in joint_tasks else task
    return cfg.baselines.mean_pose_from.get(task, default)


def _joint_sources(
    cfg: EvalConfig, out_dir: Path, preset: str
) -> tuple[dict[str, TaskRows], dict[str, np.ndarray]]:
    """Rows of each joints-only source (a query shard under ``<output_dir>/joints/<name>/``) and their 14 joints."""
    rows_of: dict[str, TaskRows] = {}
    joints: dict[str, np.ndarray] = {}
    for name, src in cfg.data.joints_sources.items():
        jrows = read_spin_joints(src.npz, src.dataset, cfg.storage)
        total = len(jrows)
        if cfg.data.subset:
            jrows = jrows.take(subset_indices(jrows.sample_ids, cfg.data.subset, cfg.data.subset_seed))
        if cfg.data.max_samples:
            jrows = jrows.take(np.arange(min(cfg.data.max_samples, len(jrows))))
        query = write_query_shard(
            jrows, src, out_dir / "joints" / name / "part-00000.parquet", preset, cfg.seed, cfg.storage
        )
        table = pq.read_table(query, columns=["sample_id", "conversation", "meta"]).to_pylist()
        rows_of[name] = TaskRows(
            task=name,
            split="test",
            files=[str(query)],
            sample_ids=[r["sample_id"] for r in table],
            sources=[src.dataset] * len(table),
            poses=np.zeros((len(table), 0), np.float32),
            prompts=[prompt_turns(r["conversation"], r["sample_id"]) for r in table],
            captions=[None] * len(table),
            meta=[json.loads(r["meta"]) for r in table],
        )
        joints[name] = jrows.joints14
        _log(f"{name}: {len(jrows)} of {total} rows of {src.npz} (joints only, SPIN's 14-joint protocol)")
    return rows_of, joints


def _score_joint_task(
    cfg: EvalConfig, tres: TaskResult, preds: dict[str, Prediction], fallback: np.ndarray, scorer: PoseScorer
) -> None:
    """MPJPE / PA-MPJPE on SPIN's 14 joints for the model and the mean pose (no pose, so no MPJRE)."""
    rows = tres.rows
    assert tres.joints is not None
    methods: dict[str, tuple[np.ndarray, int]] = {MODEL: _stack(rows, preds, fallback)}
    if cfg.baselines.mean_pose:
        methods[MEAN_POSE] = (np.repeat(fallback[None], len(rows), axis=0), 0)
    if methods[MODEL][1]:
        tres.notes.append(
            f"{methods[MODEL][1]} of {len(rows)} answers had no <POSE>; they are scored with the mean training pose"
        )
    tres.notes.append("joints only (no ground-truth pose): MPJPE and PA-MPJPE on SPIN's 14 joints")
    for method, (poses, missing) in methods.items():
        scores = scorer.score_joints(rows.sample_ids, poses, tres.joints)
        mr = MethodResult(method, scores, missing_poses=missing, poses=np.asarray(poses, np.float32))
        mr.by_source = grouped_means(scores, rows.sources)
        tres.methods[method] = mr
    _log(
        f"{tres.task}: "
        + ", ".join(f"{m} PA-MPJPE (14) {r.means()['pa_mpjpe_14']:.1f} mm" for m, r in tres.methods.items())
    )


def _tracking_uri(cfg: EvalConfig) -> str | None:
    from posegpt.tracking import resolve_tracking_uri

    if not cfg.tracking.enabled and not cfg.checkpoint.startswith("models:/"):
        return None
    return resolve_tracking_uri(cfg.tracking, cfg.output_dir)


def _checkpoint_location(cfg: EvalConfig, cache_dir: Path, tracking_uri: str | None) -> tuple[str, str]:
    """(where the driver reads the checkpoint files: a local folder or ``s3://`` prefix, what the workers load)."""
    if cfg.checkpoint.startswith("models:/"):
        links.parse_model_uri(cfg.checkpoint)
        where = links.checkpoint_for_workers(cfg.checkpoint, tracking_uri, cfg.storage)
        if where.startswith("models:/"):
            # A tracking server: the driver downloads its copy, each worker fetches its own.
            return links.fetch_model_checkpoint(cfg.checkpoint, tracking_uri, cache_dir), where
        return where, where
    if not is_s3(cfg.checkpoint) and not Path(cfg.checkpoint).expanduser().is_dir():
        raise FileNotFoundError(f"checkpoint {cfg.checkpoint} does not exist (expected a checkpoint folder)")
    return cfg.checkpoint, cfg.checkpoint


def _train_run_id(cfg: EvalConfig, info: CheckpointInfo, tracking_uri: str | None) -> str | None:
    if cfg.checkpoint.startswith("models:/"):
        return links.run_id_from_model_uri(cfg.checkpoint, tracking_uri) if tracking_uri else None
    return links.run_id_from_checkpoint(info.location, cfg.storage)


def _retrieval_key(cfg: EvalConfig, rows: TaskRows) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(to_dict(cfg.retrieval.model), sort_keys=True).encode())
    for sid, cap in zip(rows.sample_ids, rows.captions, strict=True):
        h.update(f"{sid}\t{cap}\n".encode())
    h.update(rows.poses.tobytes())
    return h.hexdigest()[:20]


def _retrieval_model(
    cfg: EvalConfig, train: TaskRows, cache_dir: Path, out_dir: Path
) -> tuple[TextPoseRetrieval, Path]:
    text_cache = Path(cache_dir) / "text_features"
    if cfg.retrieval.model_dir:
        folder = Path(cfg.retrieval.model_dir)
        _log(f"retrieval model: {folder}")
        return TextPoseRetrieval.load(folder, cache_dir=text_cache), folder
    folder = out_dir / "retrieval"
    key = _retrieval_key(cfg, train)
    key_file = folder / "train_key.txt"
    if key_file.exists() and key_file.read_text().strip() == key:
        _log(f"retrieval model: reusing {folder}")
        return TextPoseRetrieval.load(folder, cache_dir=text_cache), folder
    _log(f"retrieval model: training on {len(train)} {RETRIEVAL_TASK}/{cfg.data.train_split} pairs")
    model = TextPoseRetrieval(cfg.retrieval.model, cache_dir=text_cache)
    summary = model.fit(train.poses, [c or "" for c in train.captions])
    _log(
        f"retrieval model: {summary.epochs} epochs in {summary.seconds:.1f} s, loss {summary.final_loss:.3f}"
    )
    model.save(folder)
    key_file.write_text(key + "\n")
    return model, folder


def _stack(rows: TaskRows, preds: dict[str, Prediction], fallback: np.ndarray) -> tuple[np.ndarray, int]:
    """(N, 72) predicted poses in row order; answers without a pose get ``fallback``."""
    out = np.empty((len(rows), POSE_DIM), dtype=np.float32)
    missing = 0
    for i, sid in enumerate(rows.sample_ids):
        pose = preds[sid].pose
        if pose is None:
            out[i] = fallback
            missing += 1
        else:
            out[i] = pose
    return out, missing


def _render_examples(
    cfg: EvalConfig,
    result: EvalResult,
    predictions: dict[str, dict[str, Prediction]],
    body: BodyModel,
    report_dir: Path,
) -> dict[str, dict[str, Path]]:
    renderer = BodyRenderer(body, cfg.report.render_size)
    out: dict[str, dict[str, Path]] = {}
    for task, tres in result.tasks.items():
        if tres.joints is not None:
            continue  # no ground-truth pose to draw
        if task in POSE_INPUT_EVAL_TASKS:
            out[task] = render_pose_input_examples(tres, renderer, report_dir)
            continue
        rows = tres.rows
        model = tres.methods[MODEL]
        cases = pick_cases(model.scores.values["pa_mpjpe"])
        ids = [rows.sample_ids[i] for i in cases.values()]
        images = read_images(rows.files, ids, cfg.storage)
        preds, _ = _stack(rows, predictions[task], np.zeros(POSE_DIM, np.float32))
        texts = rows.query_texts()
        out[task] = {}
        for case in CASES:
            i = cases[case]
            err = model.scores.values["pa_mpjpe"][i]
            path = report_dir / "examples" / f"{task}_{case}.png"
            title = f"{case}: {err:.0f} mm"
            render_example(
                path, renderer, preds[i], rows.poses[i], images.get(rows.sample_ids[i]), texts[i], title
            )
            out[task][case] = path
    return out


def _log_mlflow(
    cfg: EvalConfig,
    result: EvalResult,
    info: CheckpointInfo,
    tracking_uri: str | None,
    report_dir: Path,
    examples: dict[str, dict[str, Path]],
) -> None:
    """Log the run (child of the training run when that run is in this store) and write the report inside it."""
    import mlflow

    from posegpt import tracking

    parent = None
    if result.train_run_id and tracking_uri and links.run_exists(result.train_run_id, tracking_uri):
        parent = result.train_run_id
    elif result.train_run_id:
        _log(f"training run {result.train_run_id} is not in {tracking_uri}: linked by tag only")
    tags = {
        links.JOB_TAG: links.EVAL_JOB,
        links.CHECKPOINT_TAG: cfg.checkpoint,
        "posegpt.base_model": info.base_model,
    }
    if result.train_run_id:
        tags[links.TRAIN_RUN_TAG] = result.train_run_id
    name = f"evaluate-{Path(cfg.checkpoint.rstrip('/')).name or 'checkpoint'}"
    with tracking.run(cfg.tracking, cfg.output_dir, run_name=name, tags=tags, parent_run_id=parent) as active:
        if active is None:
            write_report(result, report_dir, cfg.report.decimals, examples)
            return
        result.run_id = active.info.run_id
        # Written inside the run so that the Markdown names it.
        write_report(result, report_dir, cfg.report.decimals, examples)
        tracking.log_config(cfg)
        manifest = read_manifest(cfg.data.shard_root, cfg.storage)
        if manifest is not None:
            tracking.log_shard_dataset(cfg.data.shard_root, manifest, context="evaluation")
        metrics = {k: float(v) for k, v in result.metrics().items() if np.isfinite(v)}
        mlflow.log_metrics(metrics)
        mlflow.log_dict(_summary(result), "report/summary.json")
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        if result.retrieval_dir is not None and result.retrieval_dir.exists():
            mlflow.log_artifacts(str(result.retrieval_dir), artifact_path="retrieval_model")


def _summary(result: EvalResult) -> dict[str, Any]:
    out: dict[str, Any] = {"checkpoint": result.checkpoint, "tasks": {}, "skipped": result.skipped}
    for task, tres in result.tasks.items():
        out["tasks"][task] = {
            "samples": len(tres.rows),
            "methods": {m: r.means() for m, r in tres.methods.items()},
            "gt_recalls": asdict(tres.gt_recalls) if tres.gt_recalls else None,
            "notes": tres.notes,
        }
    return out
