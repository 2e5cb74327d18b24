"""The committed configuration reference is current, and every config key has a docstring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.config_reference import job_config_classes, missing_docs

REPO = Path(__file__).resolve().parents[2]


def test_committed_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "jobs/config_reference.py", "--check", "docs/configuration.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("entry", "cls"), job_config_classes(), ids=[entry for entry, _ in job_config_classes()]
)
def test_every_config_key_has_a_docstring(entry: str, cls: type) -> None:
    assert missing_docs(cls) == [], f"{entry}: {cls.__name__} fields without a docstring"
