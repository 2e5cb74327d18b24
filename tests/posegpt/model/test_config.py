"""Model presets and config checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from posegpt.config import ConfigError, load_config
from posegpt.model.config import PoseGPTModelConfig

PRESETS = Path(__file__).resolve().parents[3] / "configs" / "model"


@pytest.mark.parametrize("name", ["llava-1.5-7b", "llava-1.5-13b"])
def test_paper_presets(name: str) -> None:
    cfg = load_config(PoseGPTModelConfig, PRESETS / f"{name}.yaml")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lambda_text, cfg.lambda_pose) == (128, 256, 1.0, 0.1)
    assert cfg.dtype == "bfloat16" and not cfg.train_projector and not cfg.build_tiny_if_missing


def test_tiny_preset_weighs_the_pose_loss_higher() -> None:
    cfg = load_config(PoseGPTModelConfig, PRESETS / "tiny.yaml")
    assert cfg.build_tiny_if_missing and cfg.train_projector
    assert cfg.lambda_pose > 0.1
    assert "0.64x" in (PRESETS / "tiny.yaml").read_text()  # the reason is written next to the value


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lora_r=0", "lora_r"),
        ("lora_dropout=1.0", "lora_dropout"),
        ("pose_head_mean_pose=[0.0,0.0,0.0]", "72 axis-angle values"),
        ("tiny.image_size=70", "multiple of patch_size"),
        ("lambda_pose=-1", "loss weights"),
    ],
)
def test_bad_values_are_refused(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(PoseGPTModelConfig, PRESETS / "tiny.yaml", [override])


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="did you mean 'lora_alpha'"):
        load_config(PoseGPTModelConfig, PRESETS / "tiny.yaml", ["lora_alpah=3"])
