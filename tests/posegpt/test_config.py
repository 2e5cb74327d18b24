"""Typed configs: YAML presets, `_base_` includes, dotted overrides, errors that name the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from posegpt.config import (
    ConfigError,
    dump_config,
    field_docs,
    flatten,
    from_dict,
    load_config,
    parse_overrides,
    to_dict,
)


@dataclass
class OptimConfig:
    """Optimiser settings."""

    lr: float = 2e-4
    """Learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""


@dataclass
class ToyConfig:
    """A config with every kind of field the loader handles."""

    name: str = "toy"
    """Run name."""
    steps: int = 10
    """Training steps."""
    use_lora: bool = True
    """Whether to adapt with LoRA."""
    model_path: str | None = None
    """Optional model folder."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Numeric precision."""
    ratios: list[int] = field(default_factory=lambda: [2, 1, 1])
    """Task mix per batch."""
    sources: dict[str, float] = field(default_factory=dict)
    """Weight per source."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser section."""

    def validate(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    assert load_config(ToyConfig) == ToyConfig()
    preset = _write(
        tmp_path / "p.yaml", {"name": "a", "steps": 5, "optim": {"lr": 1e-3}, "sources": {"coco": 0.5}}
    )
    cfg = load_config(
        ToyConfig, preset, ["steps=7", "optim.betas=[0.8, 0.9]", "model_path=/m", "precision=bf16"]
    )
    assert cfg.name == "a" and cfg.steps == 7
    assert cfg.optim == OptimConfig(lr=1e-3, betas=(0.8, 0.9))
    assert cfg.model_path == "/m" and cfg.precision == "bf16" and cfg.sources == {"coco": 0.5}
    # YAML typing: "1e-4" from a file is a string for YAML 1.1; a float field still takes it.
    assert load_config(ToyConfig, None, ["optim.lr=1e-4"]).optim.lr == pytest.approx(1e-4)
    assert load_config(ToyConfig, None, ["model_path=null"]).model_path is None
    assert load_config(ToyConfig, None, ["steps=3.0"]).steps == 3


def test_base_include_merges_nested_sections(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    _write(
        tmp_path / "shared" / "base.yaml",
        {"name": "base", "steps": 100, "optim": {"lr": 0.1, "betas": [0.5, 0.6]}},
    )
    child = _write(tmp_path / "child.yaml", {"_base_": "shared/base.yaml", "steps": 3, "optim": {"lr": 0.2}})
    cfg = load_config(ToyConfig, child)
    assert (cfg.name, cfg.steps) == ("base", 3)
    assert cfg.optim == OptimConfig(lr=0.2, betas=(0.5, 0.6))
    # A section may include its own base too.
    _write(tmp_path / "optim.yaml", {"lr": 0.3})
    nested = _write(tmp_path / "nested.yaml", {"optim": {"_base_": "optim.yaml", "betas": [0.1, 0.2]}})
    assert load_config(ToyConfig, nested).optim == OptimConfig(lr=0.3, betas=(0.1, 0.2))


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'step'.*did you mean 'steps'"):
        load_config(ToyConfig, None, ["step=3"])
    preset = _write(tmp_path / "p.yaml", {"optim": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match=r"optim\.'lrr'.*did you mean 'lr'"):
        load_config(ToyConfig, preset)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=many", r"steps: expected an integer"),
        ("steps=1.5", r"steps: expected an integer"),
        ("use_lora=yes please", r"use_lora: expected true/false"),
        ("precision=fp16", r"precision: 'fp16' is not one of \['fp32', 'bf16'\]"),
        ("ratios=3", r"ratios: expected a list"),
        ("optim.betas=[1, 2, 3]", r"optim.betas: expected 2 values"),
        ("optim=5", r"optim: expected a mapping"),
        ("optim.lr=[1]", r"optim.lr: expected a number"),
        ("steps", r"not of the form key=value"),
        ("=3", r"empty key"),
        ("steps=-1", r"steps must be >= 0"),
    ],
)
def test_type_errors_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ToyConfig, None, [override])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_config(ToyConfig, tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: top level must be a mapping"):
        load_config(ToyConfig, listing)
    bad_base = _write(tmp_path / "bad_base.yaml", {"_base_": "nowhere.yaml"})
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml"):
        load_config(ToyConfig, bad_base)


def test_round_trip_and_flatten(tmp_path: Path) -> None:
    cfg = load_config(ToyConfig, None, ["optim.lr=0.5", "sources={a: 1.0}"])
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(ToyConfig, tmp_path / "out.yaml") == cfg
    assert from_dict(ToyConfig, to_dict(cfg)) == cfg
    flat = flatten(cfg)
    assert flat["optim.lr"] == 0.5 and flat["optim.betas"] == [0.9, 0.999] and flat["sources.a"] == 1.0
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_field_docs_read_every_field() -> None:
    docs = field_docs(ToyConfig)
    assert docs["steps"] == "Training steps." and docs["optim"] == "Optimiser section."
    assert set(docs) == {f.name for f in dataclasses.fields(ToyConfig)}
    assert field_docs(OptimConfig) == {"lr": "Learning rate.", "betas": "Adam betas."}


def test_project_configs_document_every_field() -> None:
    """The configs this area owns carry a docstring under each field."""
    from posegpt.body.model import BodyConfig
    from posegpt.storage import StorageConfig

    for cls in (BodyConfig, StorageConfig):
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}, cls.__name__
        assert all(docs.values())
