"""MLflow conventions: one store per output folder, artifacts beside a sqlite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from posegpt import tracking
from posegpt.tracking import TrackingConfig


@pytest.mark.slow
def test_sqlite_store_keeps_artifacts_beside_the_database(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    # Started from an unrelated folder: nothing may land there (MLflow's default is ./mlruns).
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "job"
    cfg = TrackingConfig(experiment="tracking-test")
    with tracking.run(cfg, out, run_name="job") as active:
        assert active is not None
        (tmp_path / "note.txt").write_text("hello")
        mlflow.log_artifact(str(tmp_path / "note.txt"))
        run_id = active.info.run_id
    assert (out / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    artifact_uri = client.get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith((out / "mlartifacts").as_uri()), artifact_uri
    assert list((out / "mlartifacts").rglob("note.txt"))
    assert not (elsewhere / "mlruns").exists()
    # A second job on the same store reuses the experiment.
    with tracking.run(cfg, out, run_name="again") as again:
        assert again.info.experiment_id == client.get_run(run_id).info.experiment_id


def test_server_uri_leaves_the_artifact_root_to_the_server() -> None:
    assert tracking.artifact_location("http://127.0.0.1:5000") is None
    assert tracking.artifact_location("sqlite:////data/runs/mlflow.db") == "file:///data/runs/mlartifacts"


def test_disabled_tracking_logs_nothing(tmp_path: Path) -> None:
    with tracking.run(TrackingConfig(enabled=False), tmp_path, run_name="x") as active:
        assert active is None
    assert not (tmp_path / "mlflow.db").exists()


def test_s3_output_needs_a_tracking_uri() -> None:
    with pytest.raises(ValueError, match=r"tracking\.tracking_uri must be set"):
        tracking.resolve_tracking_uri(TrackingConfig(), "s3://bucket/out")


@pytest.mark.parametrize(
    "configured,environ,expected",
    [
        (None, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "http://mlflow:5000"),
        ("sqlite:///x.db", {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "sqlite:///x.db"),
        (None, {}, None),
        (None, {"MLFLOW_TRACKING_URI": ""}, None),
    ],
)
def test_environment_names_the_server_only_when_the_config_names_none(configured, environ, expected) -> None:
    from posegpt.evaluation.compare import CompareConfig

    cfg = CompareConfig(tracking=TrackingConfig(tracking_uri=configured))
    tracking.apply_environment(cfg, environ)
    assert cfg.tracking.tracking_uri == expected


@pytest.mark.slow
@pytest.mark.parametrize("enabled", [True, False])
def test_runs_log_system_metrics_when_asked(tmp_path: Path, enabled: bool) -> None:
    import time

    import mlflow

    mlflow.set_system_metrics_sampling_interval(1)
    try:
        cfg = TrackingConfig(experiment="system-metrics", system_metrics=enabled)
        with tracking.run(cfg, tmp_path, run_name="job") as active:
            time.sleep(2.5)
            run_id = active.info.run_id
    finally:
        mlflow.set_system_metrics_sampling_interval(None)
    metrics = (
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.metrics
    )
    system = {k for k in metrics if k.startswith("system/")}
    if enabled:
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
        assert 0.0 <= metrics["system/cpu_utilization_percentage"] <= 100.0
    else:
        assert not system
