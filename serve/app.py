"""The Serve application: ``serve.app:app`` is a builder taking the application's args.

    serve run serve.app:app checkpoint=outputs/demo/checkpoint            # local, one command
    serve run serve.app:app checkpoint=s3://bucket/ckpt device=cuda model.num_gpus=1
    serve deploy serve/config.yaml                                        # cluster (autoscaling etc.)

Args are ``ServeConfig`` fields (dotted keys for sections, ``config=preset.yaml``
for a YAML preset); see ``serve/settings.py``. The builder binds three deployments:
``PoseModel`` (one PoseGPT per replica, batched decoding), ``PersonDetector`` (the
person detector of ``detect: true`` requests) and ``PoseIngress`` (HTTP routes and the
web page), each with the Serve options of its section.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ray.serve import Application

from posegpt.config import to_dict
from serve.detector import PersonDetectorDeployment
from serve.ingress import PoseIngress
from serve.model import PoseModel
from serve.settings import ServeConfig, config_from_args


def build(cfg: ServeConfig) -> Application:
    """The application for a checked ``ServeConfig``."""
    settings = to_dict(cfg)
    model = PoseModel.options(user_config=asdict(cfg.batching), **cfg.model.deployment_options()).bind(
        settings
    )
    detector = PersonDetectorDeployment.options(**cfg.detector_deployment.deployment_options()).bind(settings)
    return PoseIngress.options(**cfg.ingress.deployment_options()).bind(model, detector, settings)


def app(args: dict[str, Any]) -> Application:
    """Application builder for ``serve run serve.app:app key=value ...`` and ``import_path: serve.app:app``."""
    return build(config_from_args(args))


__all__ = ["app", "build"]
