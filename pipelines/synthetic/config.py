"""``SynthConfig``: how big the synthetic world is and how it looks (presets in ``configs/synth/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from posegpt.body.model import BodyConfig
from posegpt.config import ConfigError
from posegpt.storage import StorageConfig


@dataclass
class SynthConfig:
    """The synthetic world written by ``jobs/synth.py``."""

    seed: int = 0
    """Everything written is a function of this seed (same seed, same bytes)."""
    poses: int = 300
    """PoseScript pose ids (frames referenced from the AMASS-style sequences)."""
    poses_per_sequence: int = 4
    """Pose ids referenced in each AMASS sequence."""
    frames_per_sequence: int = 30
    """Frames in each AMASS sequence (the motion interpolates between variants of one activity)."""
    old_name_fraction: float = 0.5
    """Share of sequences stored under AMASS's old folder names (the rest under today's names)."""
    human_fraction: float = 0.25
    """Share of pose ids with a human caption (the rest have automatic captions only)."""
    auto_captions: int = 3
    """Automatic captions per pose id in the V2 file (the V1 copy always has six: automatic_A … F)."""
    v1_poses: int = 100
    """Pose ids copied into the V1 layout (the first ones of the V2 layout)."""
    val_fraction: float = 0.1
    """Share of sequences (pose ids, images and scenes alike) in the validation split."""
    test_fraction: float = 0.1
    """Share of sequences (pose ids, images and scenes alike) in the test split."""
    pose_pairs: int = 0
    """PoseFix-style pose pairs with modifier texts (``posefix/``, for poseedit / posediff); 0 writes none."""
    in_sequence_fraction: float = 0.5
    """Share of the pose pairs taken from one sequence (the rest join two sequences of one split)."""
    spg_fraction: float = 0.5
    """Share of pose ids of each split that get an implicit activity description (``spg``)."""
    images: int = 200
    """Single-person image rows, split between the SPIN-style and HMR2-style datasets."""
    hmr2_fraction: float = 0.5
    """Share of the single-person images written in the HMR2 format (the rest SPIN)."""
    no_pose_fraction: float = 0.02
    """Share of image rows marked as having no SMPL ground truth (``has_smpl`` / ``has_body_pose`` 0)."""
    image_size: int = 256
    """Width and height of every rendered image (pixels)."""
    jpeg_quality: int = 90
    """JPEG quality of the rendered images."""
    occluder_fraction: float = 0.25
    """Share of single-person images with an occluding object in front of the body."""
    rpe_scenes: int = 60
    """Multi-person scenes (2–3 people) for the ``rpe`` task; each person is one entry."""
    llava_rows: int = 120
    """LLaVA-format instruction conversations."""
    text_only_fraction: float = 0.2
    """Share of the instruction conversations without an image."""
    workers: int = 1
    """Processes that render images (1 renders in this process)."""
    body: BodyConfig = field(default_factory=BodyConfig)
    """Body model used to pose and render people (default: the procedural body)."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """S3 endpoint for an ``s3://`` output (the world is written locally, then uploaded)."""

    def validate(self) -> None:
        for name in ("poses", "poses_per_sequence", "frames_per_sequence", "image_size", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("images", "rpe_scenes", "llava_rows", "v1_poses", "auto_captions", "pose_pairs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.poses_per_sequence > self.frames_per_sequence:
            raise ConfigError(
                f"poses_per_sequence ({self.poses_per_sequence}) exceeds frames_per_sequence ({self.frames_per_sequence})"
            )
        for name in (
            "old_name_fraction",
            "human_fraction",
            "val_fraction",
            "test_fraction",
            "spg_fraction",
            "in_sequence_fraction",
            "hmr2_fraction",
            "no_pose_fraction",
            "occluder_fraction",
            "text_only_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("val_fraction + test_fraction must leave some data for training")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be within [1, 100], got {self.jpeg_quality}")
        if self.image_size < 64:
            raise ConfigError(f"image_size must be at least 64 pixels, got {self.image_size}")
