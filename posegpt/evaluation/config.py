"""The typed evaluation config: what ``jobs/evaluate.py --config configs/eval/<preset>.yaml`` reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from posegpt.data.templates import PRESETS
from posegpt.detect import DetectorConfig
from posegpt.evaluation.tracking_links import PromotionConfig
from posegpt.retrieval import RetrievalConfig
from posegpt.storage import StorageConfig
from posegpt.tracking import TrackingConfig

POSE_ANSWER_TASKS: tuple[str, ...] = ("image2pose", "text2pose", "spg", "rpe")
"""Tasks answered with a pose from an image or a text (the default ``data.tasks``)."""
POSE_INPUT_EVAL_TASKS: tuple[str, ...] = ("pose2text", "posediff", "poseedit")
"""Tasks that give the model poses: describe one (R^P2T, BLEU/ROUGE), compare two (pair recall,
BLEU/ROUGE), edit one (PA-MPJPE against *no edit* and the caption nearest neighbour)."""
EVAL_TASKS: tuple[str, ...] = (*POSE_ANSWER_TASKS, *POSE_INPUT_EVAL_TASKS)
"""Tasks the evaluation scores."""
TEXT_TASKS: tuple[str, ...] = ("text2pose", "spg", "rpe")
"""Tasks whose query carries a description, so the nearest-neighbour baseline applies."""
RECALL_TASKS: tuple[str, ...] = ("text2pose", "spg")
"""Text-to-pose generation tasks scored by retrieval recall, each over its own split as gallery."""
SHARD_PROMPTS = "shard"
"""``data.prompts`` value that asks each row's question as its shard wrote it."""


@dataclass
class JointsSourceConfig:
    """A test source with 3D joints and no pose, scored with MPJPE / PA-MPJPE on SPIN's 14 joints."""

    npz: str = ""
    """SPIN's joints file, e.g. ``h36m_valid_protocol2.npz`` (``imgname``, ``center``, ``scale``, ``S``), local or ``s3://``."""
    image_root: str = ""
    """Folder the ``imgname`` paths are relative to (SPIN's H36M folder); empty: the npz's folder."""
    dataset: str = "h36m"
    """Value of the ``source`` column and prefix of the sample ids."""
    crop_padding: float = 1.0
    """Crop side = this × 200 × ``scale`` (1.0: SPIN's box, as the prepare job's default)."""
    image_size: int = 336
    """Side of the crops in pixels (the vision tower's input, as the prepare job's ``image_size``)."""
    jpeg_quality: int = 90
    """JPEG quality of the crops (as the prepare job's)."""

    def validate(self, where: str) -> list[str]:
        errors = []
        if not self.npz:
            errors.append(f"{where}.npz is empty")
        if self.crop_padding <= 0 or self.image_size < 16:
            errors.append(f"{where}: crop_padding must be > 0 and image_size >= 16")
        if not 1 <= self.jpeg_quality <= 100:
            errors.append(f"{where}.jpeg_quality must be within [1, 100]")
        return errors


@dataclass
class EvalDataSection:
    """Which shards are scored, and which split feeds the baselines and the retrieval model."""

    shard_root: str = "outputs/shards"
    """Shard folder written by ``jobs/prepare.py`` (local or ``s3://``): ``<root>/<task>/<split>/*.parquet``."""
    split: str = "test"
    """Split scored (every row of it, the whole split being the retrieval gallery)."""
    train_split: str = "train"
    """Split the baselines (mean pose, nearest neighbour) and the retrieval model learn from."""
    tasks: list[str] = field(default_factory=lambda: list(POSE_ANSWER_TASKS))
    """Tasks to score, among ``image2pose``, ``text2pose``, ``spg``, ``rpe`` and the pose-input tasks ``pose2text``, ``posediff``, ``poseedit``."""
    skip_missing_tasks: bool = False
    """Skip a listed task whose split has no shards (with a note in the report) instead of failing."""
    max_samples: int = 0
    """Score only the first N rows of each task (0: all). Recalls are then over that smaller gallery."""
    subset: int = 0
    """Score a random subset of N rows per source of each task in ``subset_tasks`` and of each joints source, drawn by ``subset_seed`` (the paper: 200 images each of 3DPW and H36M); 0: all."""
    subset_seed: int = 0
    """Seed of the subset draw (a hash of seed and sample id ranks the rows, so the subset does not depend on file order)."""
    subset_tasks: list[str] = field(default_factory=lambda: ["image2pose"])
    """Tasks that ``subset`` applies to (the retrieval tasks keep their whole gallery)."""
    prompts: str = SHARD_PROMPTS
    """``shard``: ask each row's question as its shard wrote it; a template preset (``chatpose``, ``posegpt``): ask that preset's question, rebuilt from the row's caption with the eval ``seed`` (the paper's prompts on any shards)."""
    joints_sources: dict[str, JointsSourceConfig] = field(default_factory=dict)
    """Test sources with 3D joints and no pose, by name (the name is the reported task): SPIN's ``h36m_valid_protocol2.npz`` and its images; scored with MPJPE / PA-MPJPE on SPIN's 14 joints (needs ``metrics.h36m_regressor``)."""


@dataclass
class InferenceSection:
    """How the model runs across Ray workers (Ray Data ``map_batches`` with an actor pool)."""

    batch_size: int = 8
    """Queries per generation batch inside an actor."""
    concurrency: int = 2
    """Actors, each holding one copy of the model."""
    num_cpus: float = 1.0
    """CPUs reserved per actor."""
    num_gpus: float = 0.0
    """GPUs reserved per actor (1 on a GPU cluster; fractions share a GPU)."""
    read_cpus: float = 0.25
    """CPUs reserved per shard-reading task; actors plus one read task must fit the cluster, or reads wait forever."""
    torch_threads: int = 1
    """Torch intra-op threads per actor (0: torch's default)."""
    device: str = "auto"
    """``auto`` (CUDA when the actor has a GPU), ``cpu`` or ``cuda``."""
    dtype: str | None = None
    """Weight dtype override (``bfloat16`` on GPUs); empty: the checkpoint's."""
    max_new_tokens: int = 48
    """Most tokens generated per answer; pose answers are short."""


@dataclass
class MetricsSection:
    """Body model and joint protocol for the pose metrics."""

    body_model: str | None = None
    """SMPL model file for the metrics' joints (and the 14-joint protocol's mesh); empty: the bundled procedural body."""
    h36m_regressor: str | None = None
    """``J_regressor_h36m.npy`` (17 × 6890, SPIN's file): adds MPJPE/PA-MPJPE on SPIN's 14 H36M joints regressed from the mesh; empty: off."""
    h36m_tasks: list[str] = field(default_factory=lambda: ["image2pose"])
    """Tasks that get the 14-joint protocol when a regressor is given."""


@dataclass
class RetrievalSection:
    """The text–pose retrieval model behind R^T2P / R^P2T and the nearest-neighbour baseline."""

    model_dir: str | None = None
    """A saved retrieval model folder; empty: train one on ``data.train_split`` of ``text2pose`` (kept in ``<output_dir>/retrieval`` and reused when its training data is unchanged)."""
    model: RetrievalConfig = field(default_factory=RetrievalConfig)
    """Architecture and training of the retrieval model when it is trained here."""


@dataclass
class BaselineSection:
    """Baselines scored by the same job, next to the model."""

    mean_pose: bool = True
    """The mean training pose (per joint, chordal mean of the rotations) answered to every query."""
    nearest_neighbour: bool = True
    """The training pose whose caption is nearest the query in the retrieval model's text space (text tasks)."""
    rpe_gt_crop: bool = True
    """For RPE, also ask the model with the ground-truth crop of the person (from the row's bbox) instead of the whole image."""
    mean_pose_from: dict[str, str] = field(
        default_factory=lambda: {
            "image2pose": "image2pose",
            "text2pose": "text2pose",
            "spg": "text2pose",
            "rpe": "image2pose",
        }
    )
    """Task whose training split gives each task's mean pose (image tasks share camera-frame roots, text tasks yaw-free ones)."""
    gt_crop_size: int = 336
    """Side in pixels of the ground-truth crop given to the model in the RPE crop baseline (resized again by its processor)."""
    gt_crop_padding: float = 1.2
    """Crop side as a multiple of the bbox's longer side."""
    rpe_detected_crop: bool = True
    """For RPE, also ask the model with the *detected* crop of the described person: the detector finds everyone in the whole image and the detection overlapping the row's box most is cropped, as the service does with ``detect: true``. Needs ``detector.weights``; skipped with a note without them."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """Person detector of the detected-crop baseline (``detector.*`` keys; ``jobs/train_detector.py`` writes a matching ``detector.yaml``)."""
    detect_min_iou: float = 0.3
    """A detection counts as the described person when its IoU with the row's box is at least this; rows without one are scored with the mean pose and counted as missed."""


@dataclass
class ReportSection:
    """What goes into the report folder and MLflow artifacts."""

    render_examples: bool = True
    """Render best, median and worst examples per task (input, predicted body, ground-truth body)."""
    render_size: int = 192
    """Height in pixels of each rendered panel."""
    decimals: int = 2
    """Decimals of the numbers in the Markdown tables."""


@dataclass
class EvalConfig:
    """Evaluating a PoseGPT checkpoint on test shards, against baselines, with Ray."""

    checkpoint: str = ""
    """Checkpoint to evaluate: a folder, an ``s3://`` prefix or ``models:/<name>/<version>``."""
    base_model: str | None = None
    """Base LLaVA the checkpoint must run on (local or ``s3://``); empty: the one its ``config.yaml`` names. A checkpoint whose adapter or head do not fit it fails with a clear error."""
    output_dir: str = "outputs/eval"
    """Folder of this evaluation: report, predictions, retrieval model, sqlite tracking store by default."""
    report_dir: str | None = None
    """Report folder; empty: ``<output_dir>/report``."""
    cache_dir: str | None = None
    """Cache folder (body model, text embeddings, S3 mirrors); empty: the repository's ``.cache``."""
    seed: int = 0
    """Seed of generation (greedy decoding ignores it) and of the retrieval model."""
    data: EvalDataSection = field(default_factory=EvalDataSection)
    """Shards scored and the training split of the baselines."""
    inference: InferenceSection = field(default_factory=InferenceSection)
    """Ray workers running the model."""
    metrics: MetricsSection = field(default_factory=MetricsSection)
    """Body model and H36M protocol."""
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    """Text–pose retrieval model."""
    baselines: BaselineSection = field(default_factory=BaselineSection)
    """Baselines scored next to the model."""
    report: ReportSection = field(default_factory=ReportSection)
    """Report contents."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """Endpoint for ``s3://`` shard roots and checkpoints."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking store; the evaluation run is linked to the checkpoint's training run."""
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    """Moving the registered model's alias (``champion``, what the service loads) to a ``models:/`` version that scores better."""

    def validate(self) -> None:
        """Check what the types allow but the evaluation cannot use (called by ``load_config``)."""
        from posegpt.config import ConfigError

        errors: list[str] = []
        unknown = sorted(set(self.data.tasks) - set(EVAL_TASKS))
        if unknown:
            errors.append(f"data.tasks {unknown} are not evaluated tasks {list(EVAL_TASKS)}")
        if not self.data.tasks and not self.data.joints_sources:
            errors.append("data.tasks and data.joints_sources are empty: nothing to evaluate")
        if self.data.max_samples < 0 or self.data.subset < 0:
            errors.append(
                f"data.max_samples and data.subset must be >= 0, got {self.data.max_samples}, {self.data.subset}"
            )
        bad_subset = sorted(set(self.data.subset_tasks) - set(EVAL_TASKS))
        if bad_subset:
            errors.append(f"data.subset_tasks {bad_subset} are not evaluated tasks")
        if self.data.prompts != SHARD_PROMPTS and self.data.prompts not in PRESETS:
            errors.append(
                f"data.prompts must be {SHARD_PROMPTS!r} or a template preset {sorted(PRESETS)}, got {self.data.prompts!r}"
            )
        for name, src in self.data.joints_sources.items():
            if name in EVAL_TASKS:
                errors.append(
                    f"data.joints_sources.{name}: the name is reported as a task; pick one that is not {name}"
                )
            errors += src.validate(f"data.joints_sources.{name}")
        if self.data.joints_sources and not self.metrics.h36m_regressor:
            errors.append("data.joints_sources are scored on SPIN's 14 joints: set metrics.h36m_regressor")
        inf = self.inference
        if inf.batch_size < 1 or inf.concurrency < 1:
            errors.append(
                f"inference.batch_size and inference.concurrency must be >= 1, got {inf.batch_size}, {inf.concurrency}"
            )
        if inf.num_cpus < 0 or inf.num_gpus < 0 or inf.read_cpus < 0:
            errors.append("inference.num_cpus, inference.num_gpus and inference.read_cpus must be >= 0")
        if inf.device not in ("auto", "cpu", "cuda"):
            errors.append(f"inference.device must be auto, cpu or cuda, got {inf.device!r}")
        if inf.max_new_tokens < 1:
            errors.append(f"inference.max_new_tokens must be >= 1, got {inf.max_new_tokens}")
        bad_from = {k: v for k, v in self.baselines.mean_pose_from.items() if v not in EVAL_TASKS}
        if bad_from:
            errors.append(f"baselines.mean_pose_from names unknown tasks {bad_from}")
        if self.baselines.rpe_detected_crop and self.baselines.detector.weights:
            try:
                self.baselines.detector.validate()
            except ValueError as exc:
                errors.append(f"baselines.detector: {exc}")
        bad_h36m = sorted(set(self.metrics.h36m_tasks) - set(EVAL_TASKS))
        if bad_h36m:
            errors.append(f"metrics.h36m_tasks {bad_h36m} are not evaluated tasks")
        if errors:
            raise ConfigError("invalid eval config:\n  " + "\n  ".join(errors))
