"""Ray Train end to end: checkpoints on S3, MLflow, resume, a killed worker, a NaN loss.

Few ``fit()`` runs, each shared by several assertions: the session's tiny run
(``tiny_training_run``: 4 steps, rows encoded by Ray Data's actors as the preset does), its
resumption to 24 steps during which one worker process is killed (every task stream then
continues at its exact position), a short run whose learning rate makes the loss NaN, and one
whose images the actors cannot decode.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.fixtures.training import (
    TINY_RUN_STEPS,
    TINY_RUN_TASKS,
    TINY_TRAIN_PRESET,
    tiny_train_overrides,
)

pytestmark = pytest.mark.slow

QUERY = "Show me the pose of a person standing."
RESUMED_STEPS = 24
REGISTER_WAIT_S = 5.0


def s3_listing(uri: str, endpoint: str) -> list[str]:
    from posegpt.storage import StorageConfig, s3_client, split_s3

    bucket, prefix = split_s3(uri)
    client = s3_client(StorageConfig(endpoint_url=endpoint))
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(obj["Key"][len(prefix) + 1 :] for page in pages for obj in page.get("Contents", []))


def per_worker_rows(shard_root: Path, task: str, world: int) -> int:
    """Rows each worker's equal share of a task's train split holds (Ray's ``streaming_split(equal=True)``)."""
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (shard_root / task / "train").glob("*.parquet"))
    return rows // world


def expected_position(consumed: int, rows: int) -> tuple[int, int]:
    """(epoch, position in epoch) after handing out ``consumed`` rows of a stream of ``rows`` rows."""
    return (consumed - 1) // rows, (consumed - 1) % rows + 1


def test_tiny_run_checkpoints_to_s3_in_the_model_format(tiny_training_run, s3_endpoint):
    run = tiny_training_run
    keys = s3_listing(run.run_dir, s3_endpoint)
    folders = sorted({k.split("/")[0] for k in keys if k.startswith("checkpoint_step")})
    # keep_last=1: the step-2 checkpoint was deleted once step 4 was written.
    assert len(folders) == 1 and folders[0].startswith(f"checkpoint_step{TINY_RUN_STEPS:07d}_start1_")
    files = {k.split("/", 1)[1] for k in keys if k.startswith(folders[0] + "/")}
    for name in (
        "config.yaml",
        "pose_head.safetensors",
        "adapter/adapter_model.safetensors",
        "train_state.json",
    ):
        assert name in files
    # DeepSpeed state for resuming: one optimizer shard per rank (ZeRO 2), and each rank's data position.
    assert {
        "deepspeed/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "deepspeed/state/zero_pp_rank_1_mp_rank_00_optim_states.pt",
    } <= files
    assert {"data_state/rank0.json", "data_state/rank1.json"} <= files

    state = json.loads((run.checkpoint_dir / "train_state.json").read_text())
    assert state["step"] == TINY_RUN_STEPS
    assert state["mlflow_run_id"] == run.mlflow_run_id
    assert [s["start_step"] for s in state["starts"]] == [0]
    assert state["samples_seen"] == TINY_RUN_STEPS * run.config.data.batch_size_per_worker * 2


def test_tiny_run_checkpoint_loads_and_differs_from_the_initial_model(tiny_training_run, tiny_checkpoint_dir):
    from safetensors.torch import load_file

    from posegpt.model.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_training_run.checkpoint_dir)
    assert model.pose_token_id is not None
    trained = load_file(str(tiny_training_run.checkpoint_dir / "pose_head.safetensors"))
    initial = load_file(str(Path(tiny_checkpoint_dir) / "pose_head.safetensors"))
    assert trained.keys() == initial.keys()
    assert all(np.isfinite(t.numpy()).all() for t in trained.values())
    # Four AdamW steps moved the head away from its initialisation.
    assert any(not np.allclose(trained[k].numpy(), initial[k].numpy()) for k in trained)


def test_tiny_run_logged_to_mlflow(tiny_training_run):
    import mlflow

    run = tiny_training_run
    client = mlflow.MlflowClient(tracking_uri=run.tracking_uri)
    logged = client.get_run(run.mlflow_run_id)
    assert logged.info.status == "FINISHED"
    params = logged.data.params
    assert params["optimizer.lr"] == json.dumps(run.config.optimizer.lr)
    assert params["schedule.max_steps"] == str(TINY_RUN_STEPS)
    assert params["engine.zero_stage"] == "2"
    history = {m.step for m in client.get_metric_history(run.mlflow_run_id, "train/loss")}
    assert history == set(range(1, TINY_RUN_STEPS + 1))
    for key in (
        "train/text_loss",
        "train/pose_loss",
        "train/lr",
        "train/samples_per_s",
        "train/tokens_per_s",
    ):
        assert key in logged.data.metrics
    # The preset encodes rows on Ray Data's actors; the share of step time spent waiting is logged.
    assert run.config.data.encode_on == "ray_data"
    assert 0.0 <= logged.data.metrics["perf/data_wait_share"] < 1.0
    val_steps = {m.step for m in client.get_metric_history(run.mlflow_run_id, "val/text2pose/pa_mpjpe")}
    assert val_steps == {0, 2, 4}
    ratio = logged.data.metrics["val/text2pose/pa_mpjpe_vs_mean_pose"]
    assert ratio == pytest.approx(
        logged.data.metrics["val/text2pose/pa_mpjpe"]
        / logged.data.metrics["val/text2pose/mean_pose_pa_mpjpe"]
    )
    # The shard folder is the run's input dataset; plots and the pyfunc model are artifacts.
    assert [d.dataset.digest for d in logged.inputs.dataset_inputs]
    artifacts = {a.path for a in client.list_artifacts(run.mlflow_run_id, "plots")}
    assert artifacts == {"plots/loss.png", "plots/val_pa_mpjpe.png"}
    versions = client.search_model_versions("name='posegpt-test'")
    assert run.mlflow_run_id in {v.run_id for v in versions}


def test_registered_model_answers_a_text_query_like_the_checkpoint(tiny_training_run):
    import mlflow
    import pandas as pd

    from posegpt.inference import PoseGPT

    run = tiny_training_run
    client = mlflow.MlflowClient(tracking_uri=run.tracking_uri)
    version = max(
        (v for v in client.search_model_versions("name='posegpt-test'") if v.run_id == run.mlflow_run_id),
        key=lambda v: int(v.version),
    )
    mlflow.set_tracking_uri(run.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/posegpt-test/{version.version}")
    out = pyfunc.predict(pd.DataFrame({"text": [QUERY]}), params={"max_new_tokens": 16})
    reference = PoseGPT.from_checkpoint(run.checkpoint_dir).chat(QUERY, max_new_tokens=16)
    assert list(out.columns) == ["answer", "pose", "num_poses"]
    assert out["answer"][0] == reference.text
    assert out["num_poses"][0] == len(reference.poses)
    expected = reference.poses[0].tolist() if len(reference.poses) else []
    assert np.allclose(out["pose"][0], expected, atol=1e-6)


def kill_after_checkpoint(status_file: Path, min_step: int, found: dict, timeout: float = 600.0) -> None:
    """Thread body: SIGKILL the worker of ``status_file`` a while after it reported a checkpoint at ``min_step``.

    The wait lets Ray's controller (which polls workers every 2 s) register that
    checkpoint: a worker killed right after reporting can take its report with it,
    and the restart then resumes from the checkpoint before.
    """
    deadline = time.time() + timeout
    seen_at = None
    while time.time() < deadline:
        try:
            status = json.loads(status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        if status.get("phase") == "training" and (status.get("last_checkpoint_step") or 0) >= min_step:
            seen_at = seen_at or time.time()
            if time.time() - seen_at >= REGISTER_WAIT_S:
                os.kill(int(status["pid"]), signal.SIGKILL)
                found.update(status)
                return
        time.sleep(0.05)


def test_resume_survives_a_killed_worker_and_continues_the_step_count(
    tiny_training_run, s3_endpoint, prepared_shards
):
    """Rerun the same run name to 24 steps; kill rank 1 some seconds after its step-6 checkpoint."""
    import mlflow

    from jobs.train import main
    from posegpt.config import load_config
    from posegpt.storage import StorageConfig, download_dir
    from posegpt.training.config import TrainConfig
    from posegpt.training.trainer import latest_checkpoint

    run = tiny_training_run
    overrides = [*run.overrides, f"schedule.max_steps={RESUMED_STEPS}", "validation.every=8"]
    killed: dict = {}
    killer = threading.Thread(
        target=kill_after_checkpoint, args=(run.status_dir / "rank1.json", 6, killed), daemon=True
    )
    killer.start()
    assert main(["--config", str(TINY_TRAIN_PRESET), *overrides]) == 0
    killer.join(timeout=1)
    assert killed, "the worker was never killed (no checkpoint at step >= 6 seen)"
    assert killed["step"] < RESUMED_STEPS, "the kill came after the last step"

    cfg = load_config(TrainConfig, TINY_TRAIN_PRESET, overrides)
    final = latest_checkpoint(cfg)
    assert final is not None
    assert final.rsplit("/", 1)[-1].startswith(f"checkpoint_step{RESUMED_STEPS:07d}_start3_")
    local = download_dir(final, run.checkpoint_dir.parent / "final", StorageConfig(endpoint_url=s3_endpoint))
    state = json.loads((local / "train_state.json").read_text())
    # Fit 1 started at 0; the rerun resumed at 4; the restart after the kill resumed from a
    # checkpoint written at step 6 or later, and no later than the killed worker's last one.
    starts = [s["start_step"] for s in state["starts"]]
    assert starts[:2] == [0, TINY_RUN_STEPS] and len(starts) == 3
    assert 6 <= starts[2] <= killed["last_checkpoint_step"] and starts[2] % 2 == 0
    assert state["step"] == RESUMED_STEPS
    assert state["mlflow_run_id"] == run.mlflow_run_id
    restarted = json.loads((run.status_dir / "rank1.json").read_text())
    assert restarted["pid"] != killed["pid"]
    assert (restarted["attempt"], restarted["step"]) == (3, RESUMED_STEPS)

    # No source restarted from its beginning: each rank's position is every step's worth of rows.
    counts = cfg.task_counts()  # rows of each task per worker per step, from the run's ratio
    assert cfg.active_tasks() == list(TINY_RUN_TASKS)
    for rank in (0, 1):
        positions = json.loads((local / "data_state" / f"rank{rank}.json").read_text())
        for task in cfg.active_tasks():
            per_step = counts[task]
            rows = per_worker_rows(prepared_shards, task, 2)
            assert (positions[task]["epoch"], positions[task]["position"]) == expected_position(
                RESUMED_STEPS * per_step, rows
            )

    # One MLflow run for the whole training run, with every step's loss.
    client = mlflow.MlflowClient(tracking_uri=run.tracking_uri)
    logged = client.get_run(run.mlflow_run_id)
    assert logged.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run.mlflow_run_id, "train/loss")}
    assert steps == set(range(1, RESUMED_STEPS + 1))
    same_name = client.search_runs(
        [logged.info.experiment_id], filter_string=f"tags.mlflow.runName = '{cfg.run_name}'"
    )
    assert [r.info.run_id for r in same_name] == [run.mlflow_run_id]
    restores = client.get_metric_history(run.mlflow_run_id, "time/checkpoint_restore_s")
    assert sorted(m.step for m in restores) == [TINY_RUN_STEPS, starts[2]]


def test_nan_loss_stops_every_rank_naming_step_and_samples(
    ray_local, prepared_shards, tiny_base_dir, tmp_path
):
    """A learning rate of 1e30 blows the weights up at step 1; step 2's loss is NaN."""
    from posegpt.config import load_config
    from posegpt.model.checkpoint import load_checkpoint
    from posegpt.training.config import TrainConfig
    from posegpt.training.guard import STOP_MARKER, TrainingStopped
    from posegpt.training.trainer import latest_checkpoint, train

    base = tiny_train_overrides(
        shard_root=str(prepared_shards),
        base_model=str(tiny_base_dir),
        storage_path=str(tmp_path / "runs"),
        run_name="nan",
        s3_endpoint=None,
        tracking_uri=None,
        status_dir=tmp_path / "status",
        tasks=("image2pose", "text2pose"),
    )
    overrides = [
        *base,
        "optimizer.lr=1e30",
        "schedule.warmup_start_ratio=1.0",
        "checkpoint.every=1",
        "checkpoint.keep_last=3",
        "validation.every=0",
        "data.encode_on=worker",  # the guard is the subject here; encoding actors are tested below
    ]
    cfg = load_config(TrainConfig, TINY_TRAIN_PRESET, overrides)
    assert cfg.active_tasks() == ["image2pose", "text2pose"]
    with pytest.raises(TrainingStopped) as info:
        train(cfg)
    message = str(info.value)
    assert "training stopped at step 2 (nonfinite_loss)" in message
    assert "rank 0, step 2" in message and "rank 1, step 2" in message
    shard_ids = set()
    for task in cfg.active_tasks():  # every task the mix draws from
        for f in (prepared_shards / task / "train").glob("*.parquet"):
            shard_ids.update(pq.read_table(f, columns=["sample_id"]).column(0).to_pylist())
    named = [
        s.strip()
        for line in message.splitlines()
        if "sample ids:" in line
        for s in line.split("sample ids:")[1].split(",")
    ]
    assert len(named) == 2 * cfg.data.batch_size_per_worker and set(named) <= shard_ids
    # The step-1 checkpoint is the last one, intact and loadable; the job exits 1 with the message.
    last = latest_checkpoint(cfg)
    assert last is not None and Path(last).name.startswith("checkpoint_step0000001_start1_")
    assert json.loads((Path(last) / "train_state.json").read_text())["step"] == 1
    model = load_checkpoint(last)
    assert all(bool(p.isfinite().all()) for p in model.pose_head.parameters())
    assert (tmp_path / "runs" / "nan" / STOP_MARKER).is_file()


def ray_data_overrides(
    prepared_shards: Path, tiny_base_dir: Path, tmp_path: Path, run_name: str
) -> list[str]:
    """The short 2-worker tiny run with rows encoded by Ray Data's actors, untracked, on local storage."""
    base = tiny_train_overrides(
        shard_root=str(prepared_shards),
        base_model=str(tiny_base_dir),
        storage_path=str(tmp_path / "runs"),
        run_name=run_name,
        s3_endpoint=None,
        tracking_uri=None,
        status_dir=tmp_path / "status",
        tasks=("image2pose", "text2pose"),
    )
    return [*base, "data.encode_on=ray_data", "validation.every=0", "failure.max_failures=0"]


def test_a_row_the_actors_cannot_encode_stops_training_naming_it(
    ray_local, prepared_shards, tiny_base_dir, tmp_path
):
    """Every image2pose training image cut short: step 1 stops on every rank with the rows named."""
    import shutil

    import pyarrow as pa

    from posegpt.config import load_config
    from posegpt.training.config import TrainConfig
    from posegpt.training.guard import TrainingStopped
    from posegpt.training.trainer import latest_checkpoint, train

    shards = tmp_path / "shards"
    shutil.copytree(prepared_shards, shards)
    bad_ids = set()
    for f in (shards / "image2pose" / "train").glob("*.parquet"):
        table = pq.read_table(f)
        images = [None if b is None else b[: len(b) // 3] for b in table.column("image").to_pylist()]
        bad_ids.update(table.column("sample_id").to_pylist())
        column = table.schema.get_field_index("image")
        pq.write_table(table.set_column(column, table.field("image"), pa.array(images, pa.binary())), f)
    overrides = ray_data_overrides(shards, tiny_base_dir, tmp_path, "bad-rows")
    cfg = load_config(TrainConfig, TINY_TRAIN_PRESET, [*overrides, "schedule.max_steps=2"])
    with pytest.raises(TrainingStopped) as info:
        train(cfg)
    message = str(info.value)
    assert "training stopped at step 1 (bad_batch)" in message
    assert "rank 0, step 1" in message and "rank 1, step 1" in message
    assert "RowEncodingError" in message and "cannot decode image" in message
    # The actors' message names the row itself (the guard adds every id of the batch after it).
    assert any(f"sample {i}: field image: cannot decode image" in message for i in bad_ids)
    assert latest_checkpoint(cfg) is None
