"""PoseGPT checkpoints registered in MLflow's model registry: ``models:/`` URIs to checkpoint folders.

Training registers a pyfunc whose ``checkpoint`` artifact is the checkpoint folder
(``mlflow.pyfunc.log_model(artifacts={"checkpoint": dir})``, stored as
``artifacts/<basename of dir>`` and named in ``MLmodel``). Every reader of a model
URI (evaluation, serving, chat, export) goes through this module, so they accept
the same forms: ``models:/<name>/<version>``, ``models:/<name>/latest``,
``models:/<name>/<alias>`` and ``models:/<name>@<alias>``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from posegpt.storage import StorageConfig, exists, is_s3, join, read_bytes

PREFIX = "models:/"
CHECKPOINT_ARTIFACT = "checkpoint"
"""Name of the checkpoint folder among a registered version's pyfunc artifacts."""
BASE_MODEL_ARTIFACT = "base_model"
"""Name of the bundled base model folder among a version's pyfunc artifacts (a small local base only)."""
POSE_ENCODER_ARTIFACT = "pose_encoder_weights"
"""Name of the frozen pose encoder's weights file among a version's pyfunc artifacts (when the model has one)."""
BUNDLE_BASE_MODEL_MAX_BYTES = 1 << 30
"""A local base model folder up to this size travels with the registered version; a bigger one is referenced."""
TINY_BASE_ID = "posegpt/tiny-llava"
"""Canonical id of the tiny preset's base, built by ``posegpt.model.tiny`` (not on any hub)."""


@dataclass(frozen=True)
class BaseModelReference:
    """How a registered version names its base model."""

    canonical_id: str
    """Hub-style id (``llava-hf/llava-1.5-7b-hf``), or the folder name when it names no known model."""
    uri: str
    """Where the weights are: an ``s3://`` prefix or an absolute local folder."""
    bundle: bool
    """Whether the folder travels with the version as its ``base_model`` artifact."""


def base_model_reference(base_model: str) -> BaseModelReference:
    """Canonical id and location of a checkpoint's ``base_model``; small local folders are bundled."""
    name = base_model.rstrip("/").rsplit("/", 1)[-1]
    if re.fullmatch(r"llava-(v1\.6-|1\.5-|interleave-)?[\w.-]+-hf", name):
        canonical = f"llava-hf/{name}"
    elif name == TINY_BASE_ID.split("/")[1]:
        canonical = TINY_BASE_ID
    else:
        canonical = name
    if is_s3(base_model):
        return BaseModelReference(canonical, base_model, bundle=False)
    folder = Path(base_model).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"base model folder {folder} does not exist: a version must name a base that loads"
        )
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return BaseModelReference(canonical, str(folder), bundle=size <= BUNDLE_BASE_MODEL_MAX_BYTES)


def is_model_uri(uri: str | Path) -> bool:
    return str(uri).startswith(PREFIX)


def parse_model_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name/version`` or ``models:/name@alias`` → ``(name, version or alias)``; None for other URIs."""
    if not is_model_uri(uri):
        return None
    rest = uri[len(PREFIX) :].strip("/")
    if "@" in rest and "/" not in rest.split("@", 1)[1]:
        name, _, ref = rest.partition("@")
    else:
        name, _, ref = rest.rpartition("/")
    if not name or not ref:
        raise ValueError(
            f"model URI {uri!r} must look like models:/<name>/<version>, models:/<name>/latest or models:/<name>@<alias>"
        )
    return name, ref


def model_version(uri: str, tracking_uri: str | None) -> tuple[Any, Any]:
    """(an ``MlflowClient`` on the store, the ``ModelVersion`` that ``uri`` names)."""
    from mlflow.tracking import MlflowClient

    parsed = parse_model_uri(uri)
    if parsed is None:
        raise ValueError(f"{uri} is not a models:/ URI")
    name, ref = parsed
    # The registry is asked directly: MLflow's models:/ download ignores a registry URI passed to
    # it and reads the process-wide one.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if ref.isdigit():
        return client, client.get_model_version(name, ref)
    if ref == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise ValueError(f"{uri}: registered model {name!r} has no versions")
        return client, max(versions, key=lambda v: int(v.version))
    return client, client.get_model_version_by_alias(name, ref)


def run_id_from_model_uri(uri: str, tracking_uri: str | None) -> str | None:
    """The run that produced a registered model version."""
    _, mv = model_version(uri, tracking_uri)
    return mv.run_id or None


def artifact_subpath(model_dir: str, name: str, storage: StorageConfig | None = None) -> str | None:
    """Where the pyfunc artifact ``name`` lies inside a logged model (``MLmodel``), or None."""
    mlmodel = join(model_dir, "MLmodel")
    if exists(mlmodel, storage):
        data = yaml.safe_load(read_bytes(mlmodel, storage)) or {}
        artifacts = ((data.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
        entry = artifacts.get(name)
        path = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(path, str) and path:
            return path
    return None


def checkpoint_subpath(model_dir: str, storage: StorageConfig | None = None) -> str:
    """The checkpoint folder inside a logged model: the pyfunc's ``checkpoint`` artifact, else ``checkpoint``."""
    return artifact_subpath(model_dir, CHECKPOINT_ARTIFACT, storage) or CHECKPOINT_ARTIFACT


def use_bundled_base(model_dir: Path, checkpoint: Path) -> None:
    """Point a downloaded checkpoint at the version's bundled base model and pose encoder weights
    when the ones it names are not on this machine.

    ``checkpoint`` is a private download, so its ``config.yaml`` may be rewritten.
    """
    config_file = checkpoint / "config.yaml"
    if not config_file.is_file():
        return
    config = yaml.safe_load(config_file.read_text()) or {}
    changed = False
    base = artifact_subpath(str(model_dir), BASE_MODEL_ARTIFACT)
    named = str(config.get("base_model") or "")
    if base is not None and not is_s3(named) and not (named and Path(named).expanduser().is_dir()):
        config["base_model"] = str((model_dir / base).resolve())
        config["build_tiny_if_missing"] = False
        changed = True
    weights = artifact_subpath(str(model_dir), POSE_ENCODER_ARTIFACT)
    encoder = config.get("pose_encoder") or {}
    if weights is not None and encoder.get("weights") and not Path(encoder["weights"]).expanduser().is_file():
        encoder["weights"] = str((model_dir / weights).resolve())
        changed = True
    if changed:
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def fetch_model_checkpoint(uri: str, tracking_uri: str | None, cache_dir: str | Path) -> str:
    """Download a ``models:/`` version's artifacts into ``cache_dir`` and return its checkpoint folder.

    FileNotFoundError naming the URI and the store when the version or its checkpoint is missing.
    """
    import mlflow.artifacts

    try:
        client, mv = model_version(uri, tracking_uri)
        source = client.get_model_version_download_uri(mv.name, mv.version)
        # Keyed by the resolved version: "latest" or an alias that moves fetches the new one.
        digest = hashlib.sha1(f"{tracking_uri}|{mv.name}|{mv.version}".encode()).hexdigest()[:10]
        dst = Path(cache_dir) / "mlflow-models" / f"{mv.name}-{mv.version}-{digest}"
        dst.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri
        )
    except Exception as exc:
        raise FileNotFoundError(
            f"cannot fetch {uri} from MLflow ({tracking_uri or 'default tracking URI'}): {exc}"
        ) from exc
    folder = Path(local) / checkpoint_subpath(local)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{uri}: the model version's artifacts hold no checkpoint folder ({folder.name})"
        )
    use_bundled_base(Path(local), folder)
    return str(folder)
