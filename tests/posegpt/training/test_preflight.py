"""Bad input fails before any worker starts: shards, schema version, empty tasks, config keys, S3, CPUs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posegpt.config import ConfigError, load_config
from posegpt.training.config import TrainConfig
from posegpt.training.mixing import TASKS
from posegpt.training.shards import ShardError
from posegpt.training.trainer import PreflightError, preflight, resolve_config, train

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "configs" / "train" / "tiny.yaml"
PAPER = {name: REPO / "configs" / "train" / f"{name}.yaml" for name in ("llava-1.5-7b", "llava-1.5-13b")}


def write_shards(root: Path, counts: dict[str, dict[str, int]], version: object | None = None) -> Path:
    """A minimal shard folder: a manifest and one Parquet file per non-empty task/split."""
    from posegpt.data.schema import SCHEMA_VERSION

    for task, splits in counts.items():
        for split, n in splits.items():
            if n:
                folder = root / task / split
                folder.mkdir(parents=True)
                table = pa.table({"sample_id": [f"t:{task}:{i}" for i in range(n)], "task": [task] * n})
                pq.write_table(table, folder / "part-0.parquet")
    manifest = {"schema_version": SCHEMA_VERSION if version is None else version, "counts": counts}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


FULL = {t: {"train": 6, "val": 4} for t in TASKS}


def config(tmp_path: Path, shard_root: Path | str, *extra: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        TINY,
        [
            f"data.shard_root={shard_root}",
            f"storage_path={tmp_path / 'runs'}",
            f"model.base_model={tmp_path}",
            "model.build_tiny_if_missing=false",
            "tracking.enabled=false",
            # Two workers, as on a cluster: the checks below count rows and CPUs per worker.
            "scaling.num_workers=2",
            "scaling.resources_per_worker={CPU: 0.5}",
            *extra,
        ],
    )


def assert_no_run_started(tmp_path: Path) -> None:
    assert not (tmp_path / "runs" / "tiny").exists()


def test_missing_shard_folder(tmp_path):
    with pytest.raises(ShardError, match=r"shard folder .*nowhere does not exist"):
        train(config(tmp_path, tmp_path / "nowhere"))
    assert_no_run_started(tmp_path)


def test_wrong_schema_version(tmp_path):
    root = write_shards(tmp_path / "shards", FULL, version=999)
    with pytest.raises(ShardError, match=r"manifest.json has schema version 999, this code reads version"):
        train(config(tmp_path, root))
    assert_no_run_started(tmp_path)


def test_missing_manifest(tmp_path):
    root = write_shards(tmp_path / "shards", FULL)
    (root / "manifest.json").unlink()
    with pytest.raises(ShardError, match=r"has no manifest\.json"):
        train(config(tmp_path, root))


def test_empty_task_is_named_and_a_zero_ratio_skips_it(tmp_path):
    counts = {**FULL, "vqa": {"train": 0, "val": 0}}
    root = write_shards(tmp_path / "shards", counts)
    with pytest.raises(ShardError, match=r"task 'vqa' has no train rows .*data.task_ratio.vqa=0"):
        train(config(tmp_path, root))
    assert_no_run_started(tmp_path)
    manifest = preflight(resolve_config(config(tmp_path, root, "data.task_ratio.vqa=0")))
    assert manifest["counts"]["vqa"]["train"] == 0


def test_fewer_rows_than_workers_and_missing_validation_split(tmp_path):
    root = write_shards(tmp_path / "shards", {**FULL, "text2pose": {"train": 1, "val": 4}})
    with pytest.raises(ShardError, match="'text2pose' has 1 train rows, fewer than the 2 training workers"):
        train(config(tmp_path, root))
    root = write_shards(tmp_path / "shards2", {**FULL, "image2pose": {"train": 6, "val": 0}})
    with pytest.raises(ShardError, match=r"validation task 'image2pose' has no val rows"):
        train(config(tmp_path, root))
    preflight(resolve_config(config(tmp_path, root, "validation.tasks=[text2pose]")))


def test_unknown_config_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown config key 'optimzer'.*did you mean 'optimizer'"):
        load_config(TrainConfig, TINY, ["optimzer.lr=1e-3"])
    with pytest.raises(
        ConfigError, match=r"unknown config key optimizer.'learning_rate'; valid keys of OptimizerSection"
    ):
        load_config(TrainConfig, TINY, ["optimizer.learning_rate=1e-3"])
    with pytest.raises(ConfigError, match=r"too small for ratio"):
        load_config(TrainConfig, TINY, ["data.batch_size_per_worker=2"])
    with pytest.raises(ConfigError, match=r"tracking\.tracking_uri must be set when storage_path is on S3"):
        load_config(TrainConfig, TINY, ["storage_path=s3://bucket/runs", "tracking.tracking_uri=null"])
    with pytest.raises(ConfigError, match=r"engine\.zero_stage must be 0, 1, 2 or 3"):
        load_config(TrainConfig, TINY, ["engine.zero_stage=4"])


def test_refused_s3_endpoint_names_the_endpoint(tmp_path):
    cfg = config(tmp_path, "s3://shards-bucket/shards", "storage.endpoint_url=http://127.0.0.1:1")
    with pytest.raises(
        PreflightError, match=r"data.shard_root: S3 endpoint http://127.0.0.1:1 does not answer"
    ):
        train(cfg)
    root = write_shards(tmp_path / "shards", FULL)
    cfg = config(
        tmp_path,
        root,
        "storage_path=s3://runs-bucket/runs",
        "storage.endpoint_url=http://127.0.0.1:1",
        "tracking.enabled=true",
        "tracking.tracking_uri=sqlite:///unused.db",
    )
    with pytest.raises(PreflightError, match=r"storage_path: S3 endpoint http://127.0.0.1:1 does not answer"):
        train(cfg)


def test_workers_that_leave_no_cpu_to_ray_data_are_refused(tmp_path, ray_local):
    root = write_shards(tmp_path / "shards", FULL)
    cfg = config(tmp_path, root, "scaling.resources_per_worker={CPU: 1}")
    with pytest.raises(PreflightError, match="Ray Data needs at least 1 CPU left"):
        train(cfg)
    assert_no_run_started(tmp_path)


def test_encoding_actors_that_cannot_all_start_are_refused(tmp_path, ray_local):
    """The preset's tasks x 2 actors x 0.1 CPU + a 0.25-CPU read task exceed the one CPU 2 workers leave."""
    from posegpt.training.trainer import check_cluster

    root = write_shards(tmp_path / "shards", FULL)
    cfg = config(tmp_path, root, "data.encode_on=ray_data", "data.encode_actors=2", "data.encode_cpus=0.1")
    tasks = len(cfg.active_tasks())
    assert tasks * 2 * 0.1 + 0.25 > 1.0 >= tasks * 0.1 + 0.25
    with pytest.raises(
        PreflightError, match=rf"{tasks} tasks x data.encode_actors 2 x data.encode_cpus 0.1\) plus"
    ):
        train(cfg)
    assert_no_run_started(tmp_path)
    # One actor per task fits, and encoding on the workers reserves nothing.
    check_cluster(config(tmp_path, root, "data.encode_on=ray_data", "data.encode_actors=1"))
    check_cluster(config(tmp_path, root, "data.encode_on=worker", "data.encode_actors=2"))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_hold_the_papers_settings(name):
    cfg = load_config(TrainConfig, PAPER[name])
    assert (cfg.model.lora_r, cfg.model.lora_alpha) == (128, 256)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (2e-4, 0.0)
    assert (cfg.data.batch_size_per_worker, cfg.engine.grad_accumulation) == (16, 2)
    assert (cfg.model.lambda_text, cfg.model.lambda_pose) == (1.0, 0.1)
    assert cfg.data.task_ratio == {"image2pose": 2, "text2pose": 1, "vqa": 1}
    assert cfg.task_counts() == {"image2pose": 8, "text2pose": 4, "vqa": 4}
    assert (cfg.scaling.num_workers, cfg.scaling.use_gpu) == (8, True)
    assert (cfg.engine.precision, cfg.engine.zero_stage) == ("bf16", 2)
    assert name in cfg.model.base_model


def test_tiny_preset_is_the_two_cpu_embedded_default():
    cfg = load_config(TrainConfig, TINY)
    assert (cfg.scaling.num_workers, cfg.scaling.use_gpu) == (2, False)
    assert cfg.engine.zero_stage == 2
    assert cfg.model.train_projector is True
    # The workers leave CPU to Ray Data on a 2-CPU machine.
    assert cfg.scaling.resources_per_worker["CPU"] * cfg.scaling.num_workers <= 1.0


def undocumented(cls: type, prefix: str = "") -> list[str]:
    import dataclasses
    import typing

    from posegpt.config import field_docs

    hints, docs, out = typing.get_type_hints(cls), field_docs(cls), []
    for field in dataclasses.fields(cls):
        if not docs.get(field.name):
            out.append(prefix + field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            out += undocumented(hints[field.name], f"{prefix}{field.name}.")
    return out


def test_every_train_config_field_is_documented():
    assert undocumented(TrainConfig) == []


def _pose_shards(root: Path, poses: dict[str, np.ndarray]) -> Path:
    from posegpt.data.schema import SCHEMA_VERSION

    for task, array in poses.items():
        folder = root / task / "train"
        folder.mkdir(parents=True)
        rows = [[list(map(float, p))] for p in array]
        table = pa.table(
            {
                "sample_id": [f"t:{task}:{i}" for i in range(len(array))],
                "poses": pa.array(rows, pa.list_(pa.list_(pa.float32(), 72))),
            }
        )
        pq.write_table(table, folder / "part-0.parquet")
    (root / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    return root


def test_mean_pose_head_starts_at_the_training_mean(tmp_path):
    from scipy.spatial.transform import Rotation

    from posegpt.training.trainer import with_mean_pose_head

    rng = np.random.default_rng(0)

    # Upright people in DESIGN.md's frames: roots near Rx(180°), the antipode of the identity.
    def poses(n: int) -> np.ndarray:
        out = rng.normal(0, 0.2, (n, 72)).astype(np.float32)
        out[:, :3] = (
            Rotation.from_euler("x", 180, degrees=True) * Rotation.from_rotvec(out[:, :3] * 0.3)
        ).as_rotvec()
        return out

    data = {"image2pose": poses(30), "text2pose": poses(20)}
    root = _pose_shards(tmp_path / "shards", data)
    cfg = with_mean_pose_head(config(tmp_path, root, "model.pose_head_init=mean"))
    mean = np.asarray(cfg.model.pose_head_mean_pose).reshape(24, 3)
    # Independently: scipy's rotation mean per joint over both tasks' poses.
    every = np.concatenate(list(data.values())).reshape(-1, 24, 3)
    for j in (0, 5, 17):
        expected = Rotation.from_rotvec(every[:, j].astype(np.float64)).mean()
        got = Rotation.from_rotvec(mean[j])
        assert (got.inv() * expected).magnitude() < 1e-3, j
    assert Rotation.from_rotvec(mean[0]).magnitude() > np.deg2rad(150)  # the root, not the identity
    # An explicit mean pose or the identity init is left as configured.
    assert (
        with_mean_pose_head(config(tmp_path, root, "model.pose_head_init=identity")).model.pose_head_mean_pose
        is None
    )


def test_mean_pose_head_without_poses_names_the_setting(tmp_path):
    from posegpt.training.trainer import with_mean_pose_head

    root = _pose_shards(tmp_path / "shards", {"image2pose": np.zeros((0, 72), np.float32)})
    with pytest.raises(PreflightError, match="pose_head_init=mean needs training poses"):
        with_mean_pose_head(config(tmp_path, root, "model.pose_head_init=mean"))
