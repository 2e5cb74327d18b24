"""Eval config checks for the paper protocol's settings: prompts, subsets, joints-only sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from posegpt.config import ConfigError, load_config
from posegpt.evaluation.config import EvalConfig

REPO = Path(__file__).resolve().parents[3]


def test_paper_preset_loads_with_the_papers_protocol() -> None:
    cfg = load_config(EvalConfig, REPO / "configs" / "eval" / "paper.yaml", [])
    assert (cfg.data.subset, cfg.data.subset_tasks, cfg.data.prompts) == (200, ["image2pose"], "chatpose")
    assert cfg.data.joints_sources["h36m_p2"].npz.endswith("h36m_valid_protocol2.npz")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.prompts=paper"], r"data\.prompts must be 'shard' or a template preset"),
        (["data.subset=-1"], r"data\.max_samples and data\.subset must be >= 0"),
        (["data.subset_tasks=[vqa]"], r"data\.subset_tasks \['vqa'\] are not evaluated tasks"),
        (["data.joints_sources.h36m.npz=x.npz"], r"set metrics\.h36m_regressor"),
        (
            ["data.joints_sources.rpe.npz=x.npz", "metrics.h36m_regressor=r.npy"],
            r"data\.joints_sources\.rpe: the name is reported as a task",
        ),
        (
            ["data.joints_sources.h36m.dataset=h36m", "metrics.h36m_regressor=r.npy"],
            r"joints_sources\.h36m\.npz is empty",
        ),
    ],
)
def test_bad_settings_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(EvalConfig, REPO / "configs" / "eval" / "tiny.yaml", overrides)
