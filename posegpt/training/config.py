"""The typed training config: what ``jobs/train.py --config configs/train/<preset>.yaml`` reads.

Sections follow the parts of a run: the model (shared with eval/serve presets via a
``_base_`` include of ``configs/model/*.yaml``), the data and its per-batch task mix,
the optimizer and learning-rate schedule, the DeepSpeed engine, Ray scaling,
checkpoints, validation, fault tolerance, storage and tracking. ``validate`` checks
what the type system cannot, so that a bad value fails before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from posegpt.body.model import BodyConfig
from posegpt.model.config import PoseGPTModelConfig
from posegpt.storage import StorageConfig, is_s3
from posegpt.tracking import TrackingConfig
from posegpt.training.mixing import TASKS, split_counts

POSE_TASKS: tuple[str, ...] = ("image2pose", "text2pose", "spg", "rpe", "poseedit")
"""Tasks whose answers carry a pose: the ones validation measures (``poseedit``: the edited pose B)."""


@dataclass
class DataSection:
    """QA shards and how each batch is composed from them."""

    shard_root: str = "outputs/shards"
    """Shard folder written by ``jobs/prepare.py`` (local path or ``s3://``): ``<root>/<task>/<split>/*.parquet`` plus ``manifest.json``."""
    task_ratio: dict[str, int] = field(default_factory=lambda: {"image2pose": 2, "text2pose": 1, "vqa": 1})
    """Rows of each task per batch, as integer weights (2:1:1 of 16 is 8 image2pose, 4 text2pose, 4 vqa); a task with weight 0 is not read."""
    batch_size_per_worker: int = 16
    """Samples per micro-batch on each worker, split between tasks by ``task_ratio``."""
    train_split: str = "train"
    """Split the model trains on."""
    val_split: str = "val"
    """Held-out split that validation reads its slice from."""
    shuffle_buffer: int = 256
    """Rows in each worker's local shuffle buffer per task (0: stream order)."""
    read_cpus: float = 0.25
    """CPUs Ray reserves per Parquet read task; keep it below what the training workers leave free."""
    encode_on: Literal["ray_data", "worker"] = "ray_data"
    """Where training rows are decoded and tokenised: ``ray_data``: a ``map_batches`` stage on CPU actors ahead of the training loop (the worker only pads and stacks); ``worker``: inside the training loop, on the training worker. Validation rows are always encoded on the worker."""
    encode_actors: int = 1
    """Encoding actors per task with ``encode_on: ray_data`` (each task's Dataset has its own pool)."""
    encode_cpus: float = 0.1
    """CPUs each encoding actor reserves; all tasks' actors plus one read task must fit in what the training workers leave free."""
    encode_batch_size: int = 16
    """Rows an encoding actor encodes per call."""


@dataclass
class OptimizerSection:
    """AdamW settings (DeepSpeed's AdamW; ``torch.optim.AdamW`` on CPU)."""

    lr: float = 2e-4
    """Peak learning rate, reached at the end of warm-up."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates."""
    eps: float = 1e-8
    """Adam's epsilon."""
    head_lr: float | None = None
    """Peak learning rate of the modules trained from scratch (pose head, pose encoder projector,
    pose input encoder); the LoRA adapters, new token rows and LLaVA's projector keep ``lr``. Unset:
    one rate for all. Follows the same warm-up and decay (needs ``schedule.decay: cosine``)."""


@dataclass
class ScheduleSection:
    """Steps and learning-rate schedule; a step is one optimizer update."""

    max_steps: int = 1000
    """Optimizer steps of the whole run (a resumed run continues up to this count)."""
    warmup_steps: int = 30
    """Steps of linear warm-up from ``warmup_start_ratio`` × lr to lr."""
    warmup_start_ratio: float = 0.01
    """Learning rate at the first step, as a fraction of the peak."""
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warm-up, down to ``min_lr_ratio`` × lr at ``max_steps`` (linear decays to 0)."""
    min_lr_ratio: float = 0.0
    """Final learning rate of the cosine decay, as a fraction of the peak."""


@dataclass
class EngineSection:
    """DeepSpeed engine: ZeRO stage, precision, accumulation, clipping."""

    zero_stage: int = 2
    """ZeRO stage: 2 (optimizer state and gradients partitioned) by default, 3 also partitions parameters; 0 and 1 allowed."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """``auto``: bf16 on GPUs that support it, fp32 otherwise (always fp32 on CPU)."""
    grad_accumulation: int = 1
    """Micro-batches per optimizer step."""
    grad_clip: float = 1.0
    """Gradient norm clipping threshold (0: no clipping)."""


@dataclass
class ScalingSection:
    """Ray Train workers."""

    num_workers: int = 2
    """Training workers (one process each; one GPU each with ``use_gpu``)."""
    use_gpu: bool = False
    """Train on GPUs (NCCL) instead of CPUs (gloo)."""
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    """Ray resources each worker reserves (``CPU``, ``GPU``, custom)."""
    torch_threads: int = 0
    """Torch intra-op threads per worker; 0 keeps Ray's default (the worker's CPU count)."""


@dataclass
class CheckpointSection:
    """When checkpoints are written and how many stay."""

    every: int = 100
    """Write a checkpoint every this many steps (and always at the last step)."""
    keep_last: int = 2
    """Checkpoints kept in storage; older ones are deleted by Ray Train."""


@dataclass
class ValidationSection:
    """Pose error on a held-out slice, measured during training."""

    every: int = 100
    """Validate every this many steps (and at the last step); 0 turns validation off."""
    samples: int = 64
    """Rows per task taken from the start of the validation split."""
    tasks: list[str] = field(default_factory=lambda: ["image2pose", "text2pose"])
    """Tasks to validate (those with a pose answer)."""
    batch_size: int = 16
    """Rows per forward pass during validation."""
    mean_pose_rows: int = 20000
    """Training rows per task the mean-pose baseline is averaged over."""


@dataclass
class FailureSection:
    """What happens when a worker dies."""

    max_failures: int = 2
    """Worker-group restarts (from the latest checkpoint) before the run fails; -1: unlimited."""


@dataclass
class LoggingSection:
    """Metrics cadence and the worker status files."""

    every: int = 1
    """Log training metrics to MLflow every this many steps."""
    status_dir: str | None = None
    """Local folder where each worker keeps ``rank<r>.json`` (pid, host, attempt, step) current; empty: not written."""
    register_model: bool = True
    """Register the final checkpoint as a model version (pyfunc: text in, pose out) under ``tracking.registered_model``."""


@dataclass
class TrainConfig:
    """Fine-tuning PoseGPT with Ray Train, DeepSpeed and LoRA."""

    run_name: str = "posegpt"
    """Run name: the folder under ``storage_path``; rerunning the same name resumes its latest checkpoint."""
    storage_path: str = "outputs/train"
    """Where Ray Train keeps checkpoints (local path or ``s3://``)."""
    seed: int = 0
    """Seed for model initialisation and data shuffling."""
    cache_dir: str | None = None
    """Cache folder for workers (compiled ops, model cache); empty: the repository's ``.cache``."""
    model: PoseGPTModelConfig = field(default_factory=PoseGPTModelConfig)
    """The model (backbone, LoRA, pose head, loss weights); presets include ``configs/model/*.yaml``."""
    data: DataSection = field(default_factory=DataSection)
    """QA shards and the per-batch task mix."""
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    """AdamW settings."""
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    """Step count and learning-rate schedule."""
    engine: EngineSection = field(default_factory=EngineSection)
    """DeepSpeed: ZeRO stage, precision, accumulation, clipping."""
    scaling: ScalingSection = field(default_factory=ScalingSection)
    """Ray Train workers and their resources."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpoint cadence and retention."""
    validation: ValidationSection = field(default_factory=ValidationSection)
    """Held-out pose error during training."""
    failure: FailureSection = field(default_factory=FailureSection)
    """Restarts of dead workers."""
    logging: LoggingSection = field(default_factory=LoggingSection)
    """MLflow cadence, worker status files, model registration."""
    body: BodyConfig = field(default_factory=BodyConfig)
    """Body model that turns validation poses into joints (the procedural default unless a SMPL file is given)."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """Endpoint for ``s3://`` shard roots and storage paths."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking store, experiment and registered model name."""

    def validate(self) -> None:
        """Check values the types allow but training cannot use (called by ``load_config``)."""
        errors: list[str] = []
        positive = {
            "data.batch_size_per_worker": self.data.batch_size_per_worker,
            "data.encode_actors": self.data.encode_actors,
            "data.encode_batch_size": self.data.encode_batch_size,
            "schedule.max_steps": self.schedule.max_steps,
            "engine.grad_accumulation": self.engine.grad_accumulation,
            "scaling.num_workers": self.scaling.num_workers,
            "checkpoint.every": self.checkpoint.every,
            "checkpoint.keep_last": self.checkpoint.keep_last,
            "logging.every": self.logging.every,
            "validation.batch_size": self.validation.batch_size,
            "validation.mean_pose_rows": self.validation.mean_pose_rows,
        }
        errors += [f"{k} must be >= 1, got {v}" for k, v in positive.items() if v < 1]
        if self.engine.zero_stage not in (0, 1, 2, 3):
            errors.append(f"engine.zero_stage must be 0, 1, 2 or 3, got {self.engine.zero_stage}")
        if self.optimizer.lr <= 0:
            errors.append(f"optimizer.lr must be > 0, got {self.optimizer.lr}")
        if self.optimizer.head_lr is not None:
            if self.optimizer.head_lr <= 0:
                errors.append(f"optimizer.head_lr must be > 0 or unset, got {self.optimizer.head_lr}")
            if self.schedule.decay != "cosine":
                # DeepSpeed's WarmupLR and WarmupDecayLR set one absolute peak for every group;
                # WarmupCosineLR scales each group's own rate.
                errors.append(f"optimizer.head_lr needs schedule.decay=cosine, got {self.schedule.decay!r}")
        if self.schedule.warmup_steps < 0 or self.validation.every < 0 or self.validation.samples < 0:
            errors.append("schedule.warmup_steps, validation.every and validation.samples must be >= 0")
        if not 0.0 <= self.schedule.min_lr_ratio <= 1.0 or not 0.0 <= self.schedule.warmup_start_ratio <= 1.0:
            errors.append("schedule.min_lr_ratio and schedule.warmup_start_ratio must lie in [0, 1]")
        if self.engine.grad_clip < 0:
            errors.append(f"engine.grad_clip must be >= 0, got {self.engine.grad_clip}")
        if self.data.read_cpus <= 0:
            errors.append(f"data.read_cpus must be > 0, got {self.data.read_cpus}")
        if self.data.encode_cpus <= 0:
            errors.append(f"data.encode_cpus must be > 0, got {self.data.encode_cpus}")
        bad_tasks = sorted(set(self.validation.tasks) - set(POSE_TASKS))
        if bad_tasks:
            errors.append(f"validation.tasks {bad_tasks} are not pose tasks {list(POSE_TASKS)}")
        if not self.run_name or "/" in self.run_name:
            errors.append(f"run_name must be a non-empty folder name, got {self.run_name!r}")
        try:
            split_counts(self.data.batch_size_per_worker, self.data.task_ratio)
        except ValueError as exc:
            errors.append(f"data.task_ratio: {exc}")
        if is_s3(self.storage_path) and self.tracking.enabled and not self.tracking.tracking_uri:
            errors.append(
                "tracking.tracking_uri must be set when storage_path is on S3 (sqlite cannot live there)"
            )
        try:
            self.model.validate()
        except ValueError as exc:
            errors.append(str(exc))
        if errors:
            from posegpt.config import ConfigError

            raise ConfigError("invalid train config:\n  " + "\n  ".join(errors))

    def active_tasks(self) -> list[str]:
        """Tasks the ratio reads, in batch order."""
        return [t for t in TASKS if self.data.task_ratio.get(t, 0) > 0]

    def task_counts(self) -> dict[str, int]:
        """Rows of each task in one micro-batch of one worker."""
        return split_counts(self.data.batch_size_per_worker, self.data.task_ratio)
