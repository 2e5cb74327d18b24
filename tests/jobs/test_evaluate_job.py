"""jobs/evaluate.py end to end: Ray actors, metrics checked independently, baselines, report, MLflow link."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from jobs import evaluate as evaluate_job
from posegpt import tracking
from posegpt.body.model import default_body_model
from posegpt.evaluation.shards import read_task_rows
from posegpt.tracking import TrackingConfig

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _umeyama_pa_mpjpe(p: np.ndarray, g: np.ndarray) -> float:
    """Similarity Procrustes in plain numpy (mm)."""
    mp, mg = p.mean(0), g.mean(0)
    p0, g0 = p - mp, g - mg
    u, s, vt = np.linalg.svd(g0.T @ p0)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag(d) @ vt
    scale = (s * d).sum() / (p0**2).sum()
    aligned = scale * p0 @ r.T + mg
    return float(np.linalg.norm(aligned - g, axis=-1).mean() * 1000)


def _independent(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    body = default_body_model()
    jp = body.joints(pred.astype(np.float32)).numpy().astype(np.float64)
    jg = body.joints(gt.astype(np.float32)).numpy().astype(np.float64)
    mp = np.linalg.norm((jp - jp[:, :1]) - (jg - jg[:, :1]), axis=-1).mean(-1) * 1000
    pa = np.array([_umeyama_pa_mpjpe(a, b) for a, b in zip(jp, jg, strict=True)])
    rp = Rotation.from_rotvec(pred.reshape(-1, 3).astype(np.float64))
    rg = Rotation.from_rotvec(gt.reshape(-1, 3).astype(np.float64))
    ang = (rp.inv() * rg).magnitude().reshape(len(pred), 24).mean(-1)
    return {"mpjpe": float(mp.mean()), "pa_mpjpe": float(pa.mean()), "mpjre_x100": float(ang.mean() * 100)}


class _Echo(mlflow.pyfunc.PythonModel):
    """Stands in for training's pose-query pyfunc (only its artifacts matter here)."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


@pytest.fixture(scope="module")
def evaluated(
    eval_shards: Path, posing_checkpoint_dir: Path, trained_retrieval: Path, ray_local, tmp_path_factory
):
    out = tmp_path_factory.mktemp("eval-out")
    db = out / "mlflow.db"
    # A "training run" in the same store: the evaluation must become its child.
    # Created the way the jobs create it, so its artifacts stay beside the database.
    tracking.configure(TrackingConfig(tracking_uri=f"sqlite:///{db}", experiment="posegpt"), out)
    with mlflow.start_run(run_name="train", tags={"posegpt.job": "train"}) as train_run:
        mlflow.log_param("model.lora_r", 64)
        # As training registers it: a pyfunc whose "checkpoint" artifact is the checkpoint folder.
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_Echo(),
            artifacts={"checkpoint": str(posing_checkpoint_dir)},
            pip_requirements=[],
            registered_model_name="posegpt-test",
        )
    version = info.registered_model_version

    args = [
        "--config", str(REPO / "configs" / "eval" / "tiny.yaml"),
        f"checkpoint=models:/posegpt-test/{version}",
        f"output_dir={out}",
        f"data.shard_root={eval_shards}",
        # These shards hold the four pose-output tasks; the preset's pose-input tasks are tested on their own.
        "data.tasks=[image2pose,text2pose,spg,rpe]",
        f"retrieval.model_dir={trained_retrieval}",
        f"tracking.tracking_uri=sqlite:///{db}",
        "inference.batch_size=4",
        "inference.max_new_tokens=12",
        "report.render_size=96",
    ]  # fmt: skip
    assert evaluate_job.main(args) == 0
    return out, train_run.info.run_id, db


def test_metrics_match_independent_computation(
    evaluated, eval_shards: Path, posing_checkpoint_dir: Path
) -> None:
    from posegpt.inference import PoseGPT, Query

    out, _, _ = evaluated
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    model = PoseGPT.from_checkpoint(posing_checkpoint_dir)
    train_text = read_task_rows(str(eval_shards), "text2pose", "train")
    train_img = read_task_rows(str(eval_shards), "image2pose", "train")
    fallback = {"text2pose": train_text, "spg": train_text, "image2pose": train_img, "rpe": train_img}
    for task in ("text2pose", "image2pose", "spg", "rpe"):
        rows = read_task_rows(str(eval_shards), task, "test")
        images = {}
        if task in ("image2pose", "rpe"):
            import pyarrow.parquet as pq

            table = pq.read_table(eval_shards / task / "test", columns=["sample_id", "image"])
            images = dict(
                zip(table.column("sample_id").to_pylist(), table.column("image").to_pylist(), strict=True)
            )
        answers = model.batch(
            [Query(p, images.get(s)) for p, s in zip(rows.prompts, rows.sample_ids, strict=True)],
            max_new_tokens=12,
        )
        # Answers without a pose are scored with the mean training pose (chordal mean, via scipy's Rotation.mean).
        train_poses = fallback[task].poses.astype(np.float64)
        mean = np.stack(
            [Rotation.from_rotvec(train_poses[:, 3 * j : 3 * j + 3]).mean().as_rotvec() for j in range(24)]
        ).reshape(72)
        pred = np.stack([a.poses[0] if len(a.poses) else mean for a in answers])
        expected = _independent(pred, rows.poses)
        for name, value in expected.items():
            assert metrics[f"{task}/{name}"] == pytest.approx(value, rel=2e-3, abs=0.05), (task, name)
        base = _independent(np.repeat(mean[None], len(rows), axis=0), rows.poses)
        assert metrics[f"{task}/mean_pose/pa_mpjpe"] == pytest.approx(base["pa_mpjpe"], rel=2e-3)
        assert metrics[f"{task}/missing_pose_rate"] == pytest.approx(
            sum(len(a.poses) == 0 for a in answers) / len(rows)
        )
    # The posing model answers the text prompt with a pose: the text tasks have no missing answers.
    assert metrics["text2pose/missing_pose_rate"] == 0.0


def _run_similarity(out: Path, shards: Path, retrieval_dir: Path) -> np.ndarray:
    """Caption × pose similarity of the text2pose test rows with the poses from predictions/text2pose.csv."""
    from posegpt.retrieval import TextPoseRetrieval
    from tests.fixtures.evaluation import TEXT_CACHE

    rows = read_task_rows(str(shards), "text2pose", "test")
    with (out / "report" / "predictions" / "text2pose.csv").open() as f:
        written = {r["sample_id"]: r["model/pose"] for r in csv.DictReader(f)}
    poses = np.array([[float(v) for v in written[s].split()] for s in rows.sample_ids], np.float32)
    assert poses.shape == (len(rows), 72)
    model = TextPoseRetrieval.load(retrieval_dir, cache_dir=TEXT_CACHE)
    return model.similarity([c or "" for c in rows.captions], poses)


def _recalls_at(sim: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """R^T2P (%) with ties broken at random, in expectation, one query at a time."""
    out = {}
    for k in ks:
        hits = []
        for i, row in enumerate(sim):
            beaten_by = int(np.sum(row > row[i]))
            tied_with = int(np.sum(row == row[i])) - 1
            hits.append(min(max((k - beaten_by) / (tied_with + 1), 0.0), 1.0))
        out[k] = 100 * float(np.mean(hits))
    return out


def test_groups_recalls_and_baselines(evaluated, eval_shards: Path, trained_retrieval: Path) -> None:
    out, _, _ = evaluated
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    # Per source (image2pose rows alternate 3dpw / h36m) and per RPE description type.
    assert metrics["image2pose/by_source/3dpw/count"] == 3 and metrics["image2pose/by_source/h36m/count"] == 3
    assert metrics["rpe/by_type/outfit/count"] == 3 and metrics["rpe/by_type/behaviour/count"] == 1
    per_source = (
        metrics["image2pose/by_source/3dpw/pa_mpjpe"] + metrics["image2pose/by_source/h36m/pa_mpjpe"]
    ) / 2
    assert per_source == pytest.approx(metrics["image2pose/pa_mpjpe"], rel=1e-6)
    # Retrieval: the ceiling on ground-truth poses beats the model. One pose for every text (the mean-pose
    # baseline) is an exact tie by construction and ranks at chance: 10 of 24 at K=10.
    assert metrics["text2pose/gt/r_t2p_10"] > 60
    assert metrics["text2pose/mean_pose/r_t2p_10"] == pytest.approx(100 * 10 / 24)
    # The model answers the one prompt of every text2pose row with nearly the same pose, but batched
    # generation (padding, CPU kernels) does not make them bit-identical: score the poses the run wrote.
    expected = _recalls_at(_run_similarity(out, eval_shards, trained_retrieval), (5, 10, 20))
    for k, value in expected.items():
        assert metrics[f"text2pose/r_t2p_{k}"] == pytest.approx(value, abs=1e-9), k
    # Nearest neighbour runs on text tasks only; the crop baseline on RPE rows with boxes.
    assert "text2pose/nearest_neighbour/pa_mpjpe" in metrics and "spg/nearest_neighbour/pa_mpjpe" in metrics
    assert "image2pose/nearest_neighbour/pa_mpjpe" not in metrics
    assert "rpe/model_gt_crop/pa_mpjpe" in metrics
    # On toy captions that name the joint angles, the nearest caption's pose beats the mean pose.
    assert metrics["text2pose/nearest_neighbour/pa_mpjpe"] < metrics["text2pose/mean_pose/pa_mpjpe"]
    assert metrics["samples_per_second"] > 0


def test_report_files_open(evaluated) -> None:
    out, _, _ = evaluated
    report = out / "report"
    md = (report / "report.md").read_text()
    assert (
        "## Model and baselines" in md
        and "## Retrieval recall" in md
        and "ground-truth poses (ceiling)" in md
    )
    for name in ("metrics.csv", "baselines.csv", "retrieval.csv", "predictions/text2pose.csv"):
        with (report / name).open() as f:
            assert len(list(csv.DictReader(f))) > 0, name
    with (report / "baselines.csv").open() as f:
        methods = {(r["task"], r["method"]) for r in csv.DictReader(f)}
    assert {("text2pose", "model"), ("text2pose", "mean_pose"), ("rpe", "model_gt_crop")} <= methods
    for task in ("image2pose", "text2pose", "spg", "rpe"):
        for case in ("best", "median", "worst"):
            png = report / "examples" / f"{task}_{case}.png"
            assert f"examples/{task}_{case}.png" in md
            with Image.open(png) as img:
                assert img.width > 2 * img.height  # input, predicted and ground truth side by side


def test_mlflow_run_is_child_of_training_run(evaluated) -> None:
    from mlflow.tracking import MlflowClient

    out, train_run_id, db = evaluated
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("posegpt")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`posegpt.job` = 'evaluate'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["mlflow.parentRunId"] == train_run_id
    assert run.data.tags["posegpt.train_run_id"] == train_run_id
    assert "text2pose/pa_mpjpe" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/report.md" in artifacts and "report/examples" in artifacts
    assert run.info.run_id in (out / "report" / "report.md").read_text()
    # The first scored version of the model takes the champion alias, with its score and run as tags.
    champion = client.get_model_version_by_alias("posegpt-test", "champion")
    assert champion.run_id == train_run_id
    score = float(champion.tags["posegpt.eval.text2pose/pa_mpjpe"])
    assert score == pytest.approx(run.data.metrics["text2pose/pa_mpjpe"])
    assert champion.tags["posegpt.eval_run_id"] == run.info.run_id


def test_bad_inputs(
    eval_shards: Path, posing_checkpoint_dir: Path, tiny_base_dir: Path, tmp_path: Path, capsys
) -> None:
    """Each fails before any Ray worker starts, with a message naming the problem."""
    base = [
        "--config",
        str(REPO / "configs" / "eval" / "tiny.yaml"),
        f"output_dir={tmp_path}",
        "tracking.enabled=false",
    ]

    # A base model whose decoder is narrower than the one the checkpoint was trained on.
    other = tmp_path / "other-base"
    other.mkdir()
    cfg = json.loads((tiny_base_dir / "config.json").read_text())
    cfg["text_config"]["hidden_size"] = 128
    (other / "config.json").write_text(json.dumps(cfg))
    rc = evaluate_job.main(
        [
            *base,
            f"checkpoint={posing_checkpoint_dir}",
            f"base_model={other}",
            f"data.shard_root={eval_shards}",
        ]
    )
    assert rc == 1 and "does not match base model" in capsys.readouterr().err

    # An empty split.
    empty = tmp_path / "shards"
    from tests.fixtures.evaluation import write_rows

    write_rows(empty, "text2pose", "test", [])
    rc = evaluate_job.main(
        [*base, f"checkpoint={posing_checkpoint_dir}", f"data.shard_root={empty}", "data.tasks=[text2pose]"]
    )
    assert rc == 1 and "is empty" in capsys.readouterr().err

    # A task with no shards at all, and a checkpoint that does not exist.
    rc = evaluate_job.main(
        [*base, f"checkpoint={posing_checkpoint_dir}", f"data.shard_root={empty}", "data.tasks=[spg]"]
    )
    assert rc == 1 and "no Parquet shards" in capsys.readouterr().err
    rc = evaluate_job.main([*base, f"checkpoint={tmp_path / 'nope'}", f"data.shard_root={eval_shards}"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    rc = evaluate_job.main([*base, f"data.shard_root={eval_shards}"])
    assert rc == 1 and "checkpoint is not set" in capsys.readouterr().err
    rc = evaluate_job.main([*base, "data.taskz=[spg]"])
    assert rc == 2 and "did you mean 'tasks'" in capsys.readouterr().err


def test_real_training_run(
    tiny_training_run, prepared_shards: Path, s3_endpoint: str, ray_local, tmp_path: Path
) -> None:
    """The checkpoint of a real Ray Train run, read from S3, on the prepared synthetic shards, logged as a
    child of that run on the MLflow server."""
    from mlflow.tracking import MlflowClient

    from posegpt.evaluation.tracking_links import checkpoint_for_workers, fetch_model_checkpoint
    from posegpt.training.trainer import latest_checkpoint

    run = tiny_training_run
    # The run's latest checkpoint now: the resume test may have continued the run and retired the
    # checkpoint the fixture saw (keep_last), depending on test order.
    checkpoint = latest_checkpoint(run.config)
    args = [
        "--config", str(REPO / "configs" / "eval" / "tiny.yaml"),
        f"checkpoint={checkpoint}",
        f"storage.endpoint_url={s3_endpoint}",
        f"output_dir={tmp_path}",
        f"data.shard_root={prepared_shards}",
        "data.max_samples=6",
        "retrieval.model.epochs=3",
        f"tracking.tracking_uri={run.tracking_uri}",
        "inference.batch_size=6",
        "inference.max_new_tokens=16",
        "report.render_size=96",
    ]  # fmt: skip
    assert evaluate_job.main(args) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for task in ("image2pose", "text2pose", "spg", "rpe"):
        assert metrics[f"{task}/samples"] == 6 and np.isfinite(metrics[f"{task}/pa_mpjpe"])
        assert np.isfinite(metrics[f"{task}/mean_pose/pa_mpjpe"])
    assert "text2pose/gt/r_t2p_5" in metrics
    client = MlflowClient(tracking_uri=run.tracking_uri)
    children = client.search_runs(
        [client.get_run(run.mlflow_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.mlflow_run_id}'",
    )
    assert any(c.data.tags.get("posegpt.job") == "evaluate" for c in children)
    # The version training registered, on a tracking server: each worker fetches it through the server and
    # finds the checkpoint where the pyfunc's MLmodel says it is.
    versions = client.search_model_versions(f"run_id = '{run.mlflow_run_id}'")
    assert versions, "the tiny training run registered no model version"
    uri = f"models:/{versions[0].name}/{versions[0].version}"
    assert checkpoint_for_workers(uri, run.tracking_uri) == uri
    fetched = Path(fetch_model_checkpoint(uri, run.tracking_uri, tmp_path / "cache"))
    assert (fetched / "config.yaml").is_file() and (fetched / "pose_head.safetensors").is_file()
