"""The checkpoint / base model check reads headers only and names both sides of a mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from posegpt.evaluation.checkpoint_check import CheckpointMismatch, check_checkpoint, safetensors_header


def _base_copy(base: Path, dst: Path, **text_config) -> Path:
    """A base folder whose config.json differs (only config.json is read by the check)."""
    dst.mkdir()
    cfg = json.loads((base / "config.json").read_text())
    cfg["text_config"].update(text_config)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_matching_checkpoint(tiny_checkpoint_dir: Path, tiny_base_dir: Path) -> None:
    info = check_checkpoint(str(tiny_checkpoint_dir), str(tiny_checkpoint_dir), None)
    assert Path(info.base_model) == tiny_base_dir.resolve()
    header = safetensors_header(str(tiny_checkpoint_dir / "pose_head.safetensors"))
    assert (
        int(header["__metadata__"]["hidden_size"])
        == json.loads((tiny_base_dir / "config.json").read_text())["text_config"]["hidden_size"]
    )


def test_mismatched_base(tiny_checkpoint_dir: Path, tiny_base_dir: Path, tmp_path: Path) -> None:
    wide = _base_copy(tiny_base_dir, tmp_path / "wide", hidden_size=512)
    with pytest.raises(
        CheckpointMismatch,
        match=r"does not match base model .*wide.*hidden states of size 256, the base model's are 512",
    ):
        check_checkpoint(str(tiny_checkpoint_dir), str(tiny_checkpoint_dir), str(wide))
    shallow = _base_copy(tiny_base_dir, tmp_path / "shallow", num_hidden_layers=1)
    with pytest.raises(CheckpointMismatch, match="adapts decoder layer 2, the base model has 1 layers"):
        check_checkpoint(str(tiny_checkpoint_dir), str(tiny_checkpoint_dir), str(shallow))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_checkpoint(str(tiny_checkpoint_dir), str(tiny_checkpoint_dir), str(tmp_path / "nowhere"))
    broken = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_dir, broken)
    (broken / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.yaml does not exist"):
        check_checkpoint(str(broken), str(broken), None)
