"""``PrepareConfig``: what ``jobs/prepare.py`` reads, how it transforms it, and where the shards go.

Presets live in ``configs/prepare/`` (``synthetic.yaml`` for the bundled world,
``real.yaml`` for the public datasets). Paths of the sources are relative to
``raw_root`` unless they are absolute or ``s3://`` URIs; nothing is checked
until the job runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from posegpt.config import ConfigError
from posegpt.data.crops import ImageLimits
from posegpt.data.schema import SPLITS
from posegpt.data.templates import TemplateConfig
from posegpt.detect import DetectorConfig
from posegpt.storage import StorageConfig
from posegpt.tracking import TrackingConfig

READER_TASKS: dict[str, tuple[str, ...]] = {
    "posescript": ("text2pose", "pose2text"),
    "posefix": ("poseedit", "posediff"),
}
"""Tasks a reader can write rows for, where it can write several (the first ones by default)."""
DEFAULT_READER_TASKS: dict[str, tuple[str, ...]] = {
    "posescript": ("text2pose",),
    "posefix": ("poseedit", "posediff"),
}

READER_NAMES: tuple[str, ...] = (
    "posescript",
    "posefix",
    "spin",
    "hmr2",
    "hmr2_tar",
    "llava",
    "spg",
    "rpe",
    "image_folder",
)
"""Readers known to ``pipelines.sources`` (one module per raw format)."""


@dataclass
class SourceConfig:
    """One raw dataset to read (one entry of ``sources``)."""

    reader: str = ""
    """Raw format: posescript (PoseScript V1/V2 + AMASS), posefix (PoseFix pairs + AMASS), spin, hmr2 (npz + images), hmr2_tar (HMR 2.0 webdataset
    tar shards), llava (mix665k JSON), spg, rpe, image_folder."""
    path: str = ""
    """Main input: the PoseScript or PoseFix folder, an npz file or a folder of ``<split>.npz``, a tar shard, a folder of them
    or a ``{000000..000017}`` pattern (hmr2_tar), the LLaVA JSON file, the spg/rpe folder."""
    enabled: bool = True
    """Set false to skip this source without deleting its section."""
    dataset: str = ""
    """Value of the ``source`` column and prefix of the sample ids (e.g. 3dpw, h36m, coco); empty: the section's name."""
    split: str = ""
    """Split of a single-file input (one npz, one LLaVA JSON, tar shards); empty: from the file name (``train.npz``)
    or ``train``."""
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    """Splits to read from inputs that hold several (PoseScript, spg, rpe, folders of ``<split>.npz``)."""
    image_root: str = ""
    """Folder the image paths of the input are relative to; empty: the folder of ``path`` (llava: ``raw_root``)."""
    amass_root: str = ""
    """AMASS folder (SMPL+H G npz) that PoseScript's ids point into (posescript, posefix, spg)."""
    posescript: str = ""
    """PoseScript V2 folder whose pose ids the ``spg`` descriptions (and ``posefix`` pairs, when the PoseFix
    folder lacks the ids file) refer to."""
    layout: str = "auto"
    """PoseScript release layout: v2, v1, or auto (v2 when its ids file is there)."""
    tasks: list[str] = field(default_factory=list)
    """posescript: text2pose and/or pose2text (describe the pose: same caption pick, human ones first); posefix:
    poseedit and/or posediff. Empty: text2pose (posescript), both (posefix)."""
    description_types: list[str] = field(default_factory=list)
    """rpe: which person descriptions become rows (behaviour, outfit, pose, shape, summary); empty: all."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """image_folder: the person detector (YOLO weights, min score and box size, crop padding; see posegpt.detect)."""

    def reader_tasks(self) -> tuple[str, ...]:
        """The tasks this source writes rows for (``tasks``, else the reader's default)."""
        return tuple(self.tasks) or DEFAULT_READER_TASKS.get(self.reader, ())


@dataclass
class PrepareConfig:
    """The prepare job: raw datasets → Parquet QA shards (DESIGN.md schema) + manifest + rejects."""

    raw_root: str = ""
    """Folder or s3:// prefix that relative source paths start from."""
    out: str = "outputs/shards"
    """Output folder or s3:// prefix: ``<out>/<task>/<split>/part-*.parquet``, ``manifest.json``, ``rejects/``."""
    overwrite: bool = False
    """Replace shards already in ``out`` (otherwise a non-empty output is an error)."""
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    """Raw datasets by name (see ``SourceConfig``: reader, path, dataset, split(s), image_root, amass_root, ...)."""
    seed: int = 0
    """Seeds caption selection and template picks (per sample id, so order-independent)."""
    rows_per_file: int = 2000
    """Most rows per Parquet file (a file holds rows of one read task, so many hold fewer)."""
    image_size: int = 336
    """Side of the ``image2pose`` crops in pixels (the vision tower's input size)."""
    crop_padding: float = 1.0
    """Crop side = this × the dataset's box size (SPIN/HMR2 scales already include their 1.2 padding)."""
    jpeg_quality: int = 90
    """JPEG quality of the crops."""
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    """Images over these limits are rejected before decoding."""
    all_captions: bool = False
    """PoseScript: one row per caption instead of one per pose (human caption, else a seeded automatic one)."""
    templates: TemplateConfig = field(default_factory=TemplateConfig)
    """Question/answer phrasings: the preset and how many variants per training sample (posegpt.data.templates)."""
    max_reject_fraction: float = 0.1
    """The job fails (exit 1) when rejected / read exceeds this, after writing everything."""
    engine: str = "ray"
    """ray: Ray Data workers read, transform and write (the driver only plans); local: the same in this process."""
    ray_address: str = ""
    """Ray cluster to join (empty: the one of ``ray job submit``, else a local one)."""
    rows_per_read_task: int = 2000
    """Rows of an npz file per read task (each task reads its range; a shard file holds one task's rows)."""
    read_tasks_per_source: int = 4
    """Read tasks of a source indexed by JSON or a folder listing (PoseScript, spg, rpe, LLaVA, image folders):
    each parses the index and takes every k-th entry. Tar shards are one task each."""
    batch_size: int = 32
    """Work items per block (the unit a task transforms and writes at a time)."""
    num_cpus_per_task: float = 1.0
    """CPUs reserved by each read → transform → write task."""
    progress_bars: bool = True
    """Show Ray Data's progress bars."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """S3 endpoint for s3:// inputs and outputs."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow: the run logs the config, counts, manifest and rejects, and registers the shard folder as a dataset."""

    def validate(self) -> None:
        if self.rows_per_file < 1:
            raise ConfigError(f"rows_per_file must be >= 1, got {self.rows_per_file}")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16 pixels, got {self.image_size}")
        if self.crop_padding <= 0:
            raise ConfigError(f"crop_padding must be > 0, got {self.crop_padding}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be within [1, 100], got {self.jpeg_quality}")
        if not 0.0 <= self.max_reject_fraction <= 1.0:
            raise ConfigError(f"max_reject_fraction must be within [0, 1], got {self.max_reject_fraction}")
        if self.engine not in ("ray", "local"):
            raise ConfigError(f"engine must be ray or local, got {self.engine!r}")
        if self.rows_per_read_task < 1 or self.read_tasks_per_source < 1 or self.batch_size < 1:
            raise ConfigError("rows_per_read_task, read_tasks_per_source and batch_size must be >= 1")
        if self.storage.max_attempts < 5:
            raise ConfigError(
                f"storage.max_attempts must be >= 5 (S3 throttles), got {self.storage.max_attempts}"
            )
        if self.image_limits.max_bytes < 1 or self.image_limits.max_pixels < 1:
            raise ConfigError("image_limits.max_bytes and image_limits.max_pixels must be >= 1")
        if not self.out:
            raise ConfigError("out must name an output folder or s3:// prefix")
        try:
            self.templates.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        for name, src in self.sources.items():
            if src.reader not in READER_NAMES:
                raise ConfigError(f"sources.{name}.reader: {src.reader!r} is not one of {list(READER_NAMES)}")
            if not src.path:
                raise ConfigError(f"sources.{name}.path is empty")
            bad = [s for s in src.splits if s not in SPLITS]
            if bad or (src.split and src.split not in SPLITS):
                raise ConfigError(
                    f"sources.{name}: unknown split(s) {bad or [src.split]} (known: {list(SPLITS)})"
                )
            if src.layout not in ("auto", "v1", "v2"):
                raise ConfigError(f"sources.{name}.layout must be auto, v1 or v2, got {src.layout!r}")
            allowed = READER_TASKS.get(src.reader, ())
            if src.tasks and not set(src.tasks) <= set(allowed):
                raise ConfigError(
                    f"sources.{name}.tasks {src.tasks} are not tasks of reader {src.reader} (known: {list(allowed)})"
                )
            if src.reader in ("posescript", "posefix", "spg") and not src.amass_root:
                raise ConfigError(
                    f"sources.{name}.amass_root is empty: {src.reader} poses live in AMASS files"
                )
            if src.reader == "image_folder" and not src.detector.weights:
                raise ConfigError(
                    f"sources.{name}.detector.weights is empty: image_folder finds people with a YOLO detector"
                )
            if src.reader == "spg" and not src.posescript:
                raise ConfigError(
                    f"sources.{name}.posescript is empty: spg descriptions refer to PoseScript ids"
                )
        if not any(s.enabled for s in self.sources.values()):
            raise ConfigError("no enabled source: add a section under sources")
