"""Typed settings of the Serve application, built from the application's ``args``.

``serve run serve.app:app checkpoint=PATH limits.max_new_tokens=64`` and the
``args:`` mapping of ``serve/config.yaml`` both end up in ``config_from_args``:
dotted keys (or nested mappings) override the defaults below, and ``config:``
may name a YAML preset loaded first. Unknown keys fail with the closest valid key.

Deployment options (replicas, autoscaling, queue limits, CPUs/GPUs) set here
are applied by the builder; a ``deployments:`` entry in a ``serve deploy``
config overrides them, as Serve does for any option set in code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posegpt.config import ConfigError, load_config
from posegpt.data.crops import ImageLimits
from posegpt.detect import DetectorConfig
from posegpt.runtime import DEFAULT_CACHE_DIR, REPO_ROOT
from posegpt.storage import StorageConfig, is_s3


@dataclass
class BatchingConfig:
    """How pose queries are grouped on a model replica (``@serve.batch``); changeable live."""

    max_batch_size: int = 16
    """Most queries decoded together in one left-padded batch."""
    batch_wait_timeout_s: float = 0.02
    """Longest wait for a batch to fill before decoding what has arrived."""

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"batching.max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_wait_timeout_s < 0:
            raise ConfigError(f"batching.batch_wait_timeout_s must be >= 0, got {self.batch_wait_timeout_s}")


@dataclass
class LimitsConfig:
    """Request limits; a request over one is refused with 413/422 and a JSON error naming it."""

    max_body_bytes: int = 8_000_000
    """Largest request body in bytes (checked while it is read, before JSON parsing)."""
    max_image_bytes: int = 4_000_000
    """Largest image after base64 decoding, in bytes."""
    max_image_pixels: int = 16_000_000
    """Most pixels (width × height) of an image, read from its header before it is decoded."""
    max_image_side: int = 4096
    """Longest width or height of an image in pixels, read from its header before it is decoded."""
    max_image_aspect_ratio: float = 4.0
    """Largest long side / short side of an image (a person crop is about 1:3; a 1 × 16M strip is refused)."""
    max_messages: int = 32
    """Most messages in one conversation (``/v1/chat``)."""
    max_message_chars: int = 4000
    """Longest message or pose query text, in characters."""
    max_batch_queries: int = 32
    """Most queries in one ``/v1/poses`` request."""
    max_new_tokens: int = 256
    """Largest ``max_new_tokens`` a request may ask for."""
    max_people: int = 8
    """Most people answered per image with ``detect: true`` (the detector's best scores first)."""
    max_model_calls: int = 32
    """Most model queries one request may make: queries, times people for ``detect: true``."""
    max_input_poses: int = 8
    """Most poses one conversation (or pose query) may give the model, by value or by id."""
    body_timeout_s: float = 30.0
    """Longest time to receive a request body; a slower client gets 408 and its connection is closed."""
    max_slow_bodies: int = 64
    """Most request bodies being received at once that did not arrive whole in their first packet;
    past it, such requests get 503 at once instead of holding an ingress slot."""

    def validate(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ConfigError(f"limits.{name} must be >= 1, got {value}")
        for name in ("max_messages", "max_batch_queries"):
            if getattr(self, name) > MAX_LIST_ITEMS:
                raise ConfigError(f"limits.{name} must be <= {MAX_LIST_ITEMS}, got {getattr(self, name)}")
        if self.max_message_chars > MAX_TEXT_CHARS:
            raise ConfigError(
                f"limits.max_message_chars must be <= {MAX_TEXT_CHARS}, got {self.max_message_chars}"
            )

    def image_limits(self) -> ImageLimits:
        """These limits as the project's one image-limit type (``posegpt.data.crops.ImageLimits``)."""
        return ImageLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            max_side=self.max_image_side,
            max_aspect_ratio=self.max_image_aspect_ratio,
        )


MAX_LIST_ITEMS = 1024
"""Hard cap on list lengths in the request schema: validation stops at the first item past it, so a
body of a million bad items costs no more than this many (configured limits must stay below it)."""
MAX_TEXT_CHARS = 100_000
"""Hard cap on one text field in the request schema (``limits.max_message_chars`` must stay below it)."""


@dataclass
class PoseStoreConfig:
    """The answered poses kept by id, so a later request can give one back (``serve/pose_store.py``)."""

    capacity: int = 100_000
    """Most poses kept (about 0.6 KB each: 64 MB at most); the least recently stored goes first."""
    ttl_s: float = 86_400.0
    """Seconds a pose stays usable by its id after it was answered."""
    name: str = ""
    """Store actor to use; empty: the application's own. Applications naming the same store share its
    ids (each pose still usable only with the API key that got it)."""

    def validate(self) -> None:
        if self.capacity < 1 or self.ttl_s <= 0:
            raise ConfigError(
                f"pose_store.capacity must be >= 1 and pose_store.ttl_s > 0, got {self.capacity}, {self.ttl_s}"
            )


@dataclass
class GenerationDefaults:
    """Decoding settings used when a request does not give its own."""

    max_new_tokens: int = 64
    """Tokens generated per answer unless the request asks for another number."""
    temperature: float = 0.0
    """0: greedy decoding; > 0: sampling."""


@dataclass
class ReplicaOptions:
    """Serve options of one deployment (a ``deployments:`` entry of a Serve config overrides them)."""

    num_replicas: int = 1
    """Fixed replica count when autoscaling is off."""
    autoscaling: bool = False
    """Scale between ``min_replicas`` and ``max_replicas`` on ongoing requests per replica."""
    min_replicas: int = 1
    """Fewest replicas when autoscaling."""
    max_replicas: int = 2
    """Most replicas when autoscaling."""
    target_ongoing_requests: float = 8.0
    """Autoscaling target of requests in flight per replica."""
    upscale_delay_s: float = 5.0
    """Seconds the load must stay above target before a replica is added."""
    downscale_delay_s: float = 30.0
    """Seconds the load must stay below target before a replica is removed."""
    max_ongoing_requests: int = 32
    """Requests a replica works on at once; for the model this bounds the batch size too."""
    max_queued_requests: int = 64
    """Requests each caller queues for this deployment before refusing more (-1: no limit)."""
    overload_status: int = 429
    """HTTP status of requests refused past ``max_queued_requests``: 429 (default) or 503."""
    retry_after_s: float = 1.0
    """``Retry-After`` seconds sent with a refusal."""
    num_cpus: float = 1.0
    """CPUs reserved per replica."""
    num_gpus: float = 0.0
    """GPUs reserved per replica (1 with ``device: cuda``)."""

    def validate(self, where: str) -> None:
        if self.num_replicas < 1 or self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ConfigError(
                f"{where}: need num_replicas >= 1 and 0 <= min_replicas <= max_replicas >= 1, got "
                f"{self.num_replicas}, {self.min_replicas}, {self.max_replicas}"
            )
        if self.max_ongoing_requests < 1 or self.max_queued_requests < -1 or self.max_queued_requests == 0:
            raise ConfigError(
                f"{where}: max_ongoing_requests must be >= 1 and max_queued_requests >= 1 or -1, got "
                f"{self.max_ongoing_requests}, {self.max_queued_requests}"
            )
        if self.overload_status not in (429, 503) or self.retry_after_s < 0:
            raise ConfigError(
                f"{where}: overload_status must be 429 or 503 and retry_after_s >= 0, got "
                f"{self.overload_status}, {self.retry_after_s}"
            )

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options``."""
        out: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": self.overload_status, "retry_after_s": self.retry_after_s},
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.autoscaling:
            out["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            }
        else:
            out["num_replicas"] = self.num_replicas
        return out


def _ingress_defaults() -> ReplicaOptions:
    # The ingress only parses, checks and awaits the model: many requests at once, little CPU. Room
    # for limits.max_slow_bodies slow senders beside the ordinary requests.
    return ReplicaOptions(max_ongoing_requests=512, max_queued_requests=512, num_cpus=0.25)


def _detector_defaults() -> ReplicaOptions:
    # One image at a time per replica; idle without detect requests, so it may scale to zero. Half a
    # CPU, so that model (1) + ingress (0.25) + detector fit the 2 CPUs of a laptop's `serve run`.
    return ReplicaOptions(
        autoscaling=True,
        min_replicas=0,
        max_replicas=2,
        target_ongoing_requests=2.0,
        max_ongoing_requests=4,
        max_queued_requests=32,
        num_cpus=0.5,
    )


@dataclass
class ServeConfig:
    """Everything the Serve application needs: model source, devices, batching, limits, access."""

    checkpoint: str = ""
    """PoseGPT checkpoint: a folder, an ``s3://`` prefix or an MLflow ``models:/name/version``.

    A relative folder is taken relative to the project folder (not the replica's working folder)."""
    device: str = "cpu"
    """Torch device of each model replica (``cpu``, ``cuda``); give ``model.num_gpus: 1`` with ``cuda``."""
    dtype: str | None = None
    """Model dtype override (``float32``, ``bfloat16``); empty: the checkpoint's own."""
    cache_dir: str = ""
    """Cache folder for downloads, the generated body and tool settings; empty: the project's ``.cache``."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """Where ``s3://`` URIs point."""
    tracking_uri: str | None = None
    """MLflow tracking URI that ``models:/`` checkpoints are fetched from (``sqlite:///x.db`` relative to the project)."""
    body_model_path: str | None = None
    """SMPL model file (``SMPL_NEUTRAL.pkl`` or ``.npz``) for joints and meshes; empty: the procedural default body."""
    torch_threads: int = 1
    """Torch CPU threads per model replica (one replica per core scales better than threads)."""
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    """Decoding defaults."""
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    """Initial batching of the model deployment; sent as its ``user_config`` and changeable live."""
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    """Request limits."""
    model: ReplicaOptions = field(default_factory=ReplicaOptions)
    """Serve options of the model deployment."""
    ingress: ReplicaOptions = field(default_factory=_ingress_defaults)
    """Serve options of the HTTP ingress deployment."""
    detector_deployment: ReplicaOptions = field(default_factory=_detector_defaults)
    """Serve options of the ``PersonDetector`` deployment (``detect: true`` requests)."""
    api_key_env: str | None = None
    """Name of an environment variable (on the replicas) holding the API key; never the key itself."""
    api_key_file: str | None = None
    """Path of a file holding the API key (e.g. a mounted Kubernetes secret)."""
    mesh_cache_size: int = 256
    """Bodies of recent answers kept for ``/v1/poses/{id}/mesh.obj`` and ``.png`` (per ingress replica)."""
    pose_store: PoseStoreConfig = field(default_factory=PoseStoreConfig)
    """Answered poses kept by id for later requests (one store actor per application, shared by its
    ingress replicas; its size is fixed when the first replica creates it)."""
    png_size: int = 256
    """Side in pixels of each view in a body PNG (front and side views)."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """Person detector for ``detect: true`` requests (see ``posegpt.detect``); empty ``weights``: detection off."""
    detect_crop_size: int = 336
    """Side in pixels of the person crops sent to the model for ``detect: true`` (the prepare job's ``image_size``)."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError(
                "checkpoint is required: a checkpoint folder, s3:// prefix or models:/name/version"
            )
        if self.api_key_env and self.api_key_file:
            raise ConfigError("give either api_key_env or api_key_file, not both")
        if self.torch_threads < 1 or self.mesh_cache_size < 1 or self.png_size < 16:
            raise ConfigError(
                f"torch_threads and mesh_cache_size must be >= 1 and png_size >= 16, got "
                f"{self.torch_threads}, {self.mesh_cache_size}, {self.png_size}"
            )
        if self.generation.max_new_tokens > self.limits.max_new_tokens:
            raise ConfigError(
                f"generation.max_new_tokens ({self.generation.max_new_tokens}) exceeds "
                f"limits.max_new_tokens ({self.limits.max_new_tokens})"
            )
        self.batching.validate()
        self.limits.validate()
        self.pose_store.validate()
        if self.detector.weights:
            self.detector.validate()
            if not is_s3(self.detector.weights) and not Path(resolve_local(self.detector.weights)).is_file():
                raise ConfigError(f"detector.weights: {resolve_local(self.detector.weights)} does not exist")
        if self.detect_crop_size < 16:
            raise ConfigError(f"detect_crop_size must be >= 16 pixels, got {self.detect_crop_size}")
        self.model.validate("model")
        self.ingress.validate("ingress")
        self.detector_deployment.validate("detector_deployment")
        if self.batching.max_batch_size > self.model.max_ongoing_requests:
            raise ConfigError(
                f"batching.max_batch_size ({self.batching.max_batch_size}) exceeds model.max_ongoing_requests "
                f"({self.model.max_ongoing_requests}): a replica never holds enough requests to fill a batch"
            )


def resolve_local(path: str) -> str:
    """An absolute path for a local ``path`` (relative to the project folder); URIs unchanged."""
    if not path or is_s3(path) or "://" in path or path.startswith("models:/"):
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (REPO_ROOT / p).resolve())


def _resolve_tracking_uri(uri: str | None) -> str | None:
    prefix = "sqlite:///"
    if uri and uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + resolve_local(uri[len(prefix) :])
    return uri


def resolved(cfg: ServeConfig) -> ServeConfig:
    """``cfg`` with local paths made absolute, so every replica reads the same files."""
    cfg.checkpoint = resolve_local(cfg.checkpoint)
    cfg.cache_dir = resolve_local(cfg.cache_dir) if cfg.cache_dir else str(DEFAULT_CACHE_DIR)
    cfg.tracking_uri = _resolve_tracking_uri(cfg.tracking_uri)
    if cfg.body_model_path:
        cfg.body_model_path = resolve_local(cfg.body_model_path)
    if cfg.detector.weights:
        cfg.detector.weights = resolve_local(cfg.detector.weights)
    if cfg.api_key_file:
        cfg.api_key_file = resolve_local(cfg.api_key_file)
    return cfg


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_from_args(args: Mapping[str, Any] | None) -> ServeConfig:
    """A checked ``ServeConfig`` from application args (``serve run`` strings or a config's mapping).

    ``config`` names an optional YAML preset; every other key is a (dotted) field.
    Strings are read as YAML values, as ``key=value`` overrides are everywhere else.
    """
    data = dict(args or {})
    preset = data.pop("config", None)
    overrides = [
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in _flatten(data).items()
    ]
    cfg = load_config(ServeConfig, resolve_local(str(preset)) if preset else None, overrides)
    return resolved(cfg)


__all__ = [
    "MAX_LIST_ITEMS",
    "MAX_TEXT_CHARS",
    "BatchingConfig",
    "GenerationDefaults",
    "LimitsConfig",
    "PoseStoreConfig",
    "ReplicaOptions",
    "ServeConfig",
    "config_from_args",
    "resolve_local",
    "resolved",
]
