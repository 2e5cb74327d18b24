"""docs/training.md's preset table is generated from configs/train and fails this test when stale."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from posegpt.training.preset_table import BEGIN, END, main, render, updated

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "training.md"


def test_docs_table_is_current() -> None:
    text = DOC.read_text()
    assert render() in text, "run: python -m posegpt.training.preset_table --write docs/training.md"
    assert main(["--check", str(DOC)]) == 0


def test_table_cells_come_from_the_yaml() -> None:
    raw = yaml.safe_load((REPO / "configs" / "train" / "tiny.yaml").read_text())
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in render().splitlines() if line.startswith("| ")
    }
    tiny_steps = rows["steps (warm-up)"].split(" | ")[1]
    assert tiny_steps == f"{raw['schedule']['max_steps']:,} ({raw['schedule']['warmup_steps']})"
    ratio = rows["task mix (`data.task_ratio`)"].split(" | ")[1]
    assert all(f"{task} {weight}" in ratio for task, weight in raw["data"]["task_ratio"].items() if weight)


def test_a_stale_table_is_reported(tmp_path: Path) -> None:
    doc = tmp_path / "training.md"
    doc.write_text(f"intro\n{BEGIN}\n| old | table |\n{END}\nrest\n")
    assert main(["--check", str(doc)]) == 1
    assert main(["--write", str(doc)]) == 0
    assert main(["--check", str(doc)]) == 0
    assert doc.read_text().startswith("intro\n") and doc.read_text().endswith("\nrest\n")
    with pytest.raises(ValueError, match="no generated preset table"):
        updated("no markers", "table", "x.md")
