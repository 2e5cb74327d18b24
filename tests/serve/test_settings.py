"""Application args → ServeConfig → deployments, and the shipped Serve config, without a cluster."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from posegpt.config import ConfigError, field_docs
from posegpt.runtime import DEFAULT_CACHE_DIR, REPO_ROOT
from serve import settings as settings_module
from serve.app import app
from serve.deploy import DEFAULT_CONFIG, load_deploy_config
from serve.settings import ServeConfig, config_from_args


def test_cli_strings_and_nested_mappings_give_the_same_config() -> None:
    cli = config_from_args(
        {
            "checkpoint": "/ckpt",
            "limits.max_new_tokens": "64",
            "batching.batch_wait_timeout_s": "0.5",
            "dtype": "null",
        }
    )
    nested = config_from_args(
        {"checkpoint": "/ckpt", "limits": {"max_new_tokens": 64}, "batching": {"batch_wait_timeout_s": 0.5}}
    )
    assert cli == nested
    assert cli.limits.max_new_tokens == 64 and cli.batching.batch_wait_timeout_s == 0.5 and cli.dtype is None


def test_relative_paths_are_resolved_against_the_project_folder() -> None:
    cfg = config_from_args(
        {
            "checkpoint": "outputs/demo/ckpt",
            "tracking_uri": "sqlite:///outputs/demo/mlflow.db",
            "api_key_file": "k.txt",
        }
    )
    assert cfg.checkpoint == str(REPO_ROOT / "outputs/demo/ckpt")
    assert cfg.tracking_uri == f"sqlite:///{REPO_ROOT / 'outputs/demo/mlflow.db'}"
    assert cfg.api_key_file == str(REPO_ROOT / "k.txt")
    assert cfg.cache_dir == str(DEFAULT_CACHE_DIR)
    for uri in ("s3://bucket/ckpt", "models:/posegpt/3"):
        assert config_from_args({"checkpoint": uri}).checkpoint == uri


def test_bad_args_fail_with_the_key_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checkpoint is required"):
        config_from_args({})
    with pytest.raises(ConfigError, match="did you mean 'max_new_tokens'"):
        config_from_args({"checkpoint": "x", "limits.max_new_token": "3"})
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        config_from_args({"checkpoint": "x", "batching.max_batch_size": "64"})
    with pytest.raises(ConfigError, match="overload_status"):
        config_from_args({"checkpoint": "x", "model.overload_status": "500"})
    preset = tmp_path / "serve.yaml"
    preset.write_text("checkpoint: /from/preset\nlimits: {max_messages: 3}\n")
    cfg = config_from_args({"config": str(preset), "limits.max_message_chars": "10"})
    assert (cfg.checkpoint, cfg.limits.max_messages, cfg.limits.max_message_chars) == ("/from/preset", 3, 10)


def test_every_config_field_is_documented() -> None:
    for cls in (
        c for c in vars(settings_module).values() if dataclasses.is_dataclass(c) and isinstance(c, type)
    ):
        missing = {f.name for f in dataclasses.fields(cls)} - set(field_docs(cls))
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


def test_builder_binds_the_three_deployments_with_their_options() -> None:
    application = app(
        {
            "checkpoint": "/ckpt",
            "model.autoscaling": "true",
            "model.max_replicas": "3",
            "model.num_gpus": "1",
            "batching.max_batch_size": "8",
        }
    )
    ingress = application._bound_deployment
    assert ingress.name == "PoseIngress" and ingress.num_replicas == 1
    model_app = ingress.init_args[0]
    model = model_app._bound_deployment
    assert model.name == "PoseModel"
    assert model.user_config == {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}
    assert model.ray_actor_options["num_gpus"] == 1
    auto = model._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas) == (1, 3)
    assert model.max_queued_requests == ServeConfig().model.max_queued_requests
    assert model._deployment_config.backpressure_config.status_code == 429
    detector = ingress.init_args[1]._bound_deployment
    assert detector.name == "PersonDetector"
    auto = detector._deployment_config.autoscaling_config
    assert auto.min_replicas == 0 and auto.max_replicas == ServeConfig().detector_deployment.max_replicas
    # Every replica gets the whole (resolved) config as plain data.
    assert model.init_args[0]["checkpoint"] == "/ckpt" == ingress.init_args[2]["checkpoint"]
    assert detector.init_args[0]["checkpoint"] == "/ckpt"


def test_shipped_serve_config_is_valid_and_keeps_secrets_out() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    (application,) = schema.applications
    assert application.import_path == "serve.app:app"
    cfg = config_from_args(application.args)
    # The key comes from the pods' environment: the file names the variable, nothing else about keys.
    assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", cfg.api_key_env or "") and not cfg.api_key_file
    assert [k for k in application.args if "key" in k.lower()] == ["api_key_env"]
    model = next(d for d in application.deployments if d.name == "PoseModel")
    auto = model.autoscaling_config
    assert auto["min_replicas"] <= auto["max_replicas"] and auto["target_ongoing_requests"] > 0
    assert model.user_config["max_batch_size"] <= model.max_ongoing_requests
    # The detector scales on its own, down to zero replicas when nobody asks for detection.
    detector = next(d for d in application.deployments if d.name == "PersonDetector")
    assert detector.autoscaling_config["min_replicas"] == 0 < detector.autoscaling_config["max_replicas"]
    assert cfg.limits.max_model_calls >= cfg.limits.max_batch_queries


def test_deploy_config_overrides_one_application() -> None:
    cfg = load_deploy_config(
        args={"checkpoint": "/x", "limits": {"max_messages": 2}},
        deployments={"PoseModel": {"user_config": {"max_batch_size": 1}}},
        replace={"PoseModel": {"autoscaling_config": None, "num_replicas": 2}},
    )
    (application,) = cfg["applications"]
    assert application["args"]["checkpoint"] == "/x"
    assert application["args"]["limits"]["max_messages"] == 2
    assert application["args"]["limits"]["max_new_tokens"] == 512  # merged, not replaced
    model = next(d for d in application["deployments"] if d["name"] == "PoseModel")
    assert model["user_config"] == {"max_batch_size": 1, "batch_wait_timeout_s": 0.02}
    assert "autoscaling_config" not in model and model["num_replicas"] == 2
