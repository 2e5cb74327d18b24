"""Report pieces: case picking, text panels, rendered example rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posegpt.body.model import default_body_model
from posegpt.evaluation.examples import BodyRenderer, pick_cases, render_example, text_panel
from tests.fixtures.evaluation import png_bytes


def test_pick_cases() -> None:
    assert pick_cases(np.array([5.0, 1.0, 9.0, 3.0])) == {"best": 1, "median": 3, "worst": 2}
    assert pick_cases(np.array([2.0])) == {"best": 0, "median": 0, "worst": 0}
    with pytest.raises(ValueError, match="no errors"):
        pick_cases(np.array([]))


def test_render_example(tmp_path: Path) -> None:
    renderer = BodyRenderer(default_body_model(), size=64)
    pose = np.zeros(72, np.float32)
    pose[0] = np.pi
    arm = pose.copy()
    arm[3 * 16 + 2] = -1.2
    with_image = render_example(tmp_path / "a.png", renderer, arm, pose, png_bytes(0), "", "best: 12 mm")
    with_text = render_example(
        tmp_path / "b.png", renderer, arm, pose, None, "the left arm is raised", "worst: 80 mm"
    )
    for path in (with_image, with_text):
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
        # Three panels (input, predicted front+side, ground truth front+side) under titles.
        assert arr.shape[0] > 64 and arr.shape[1] > 5 * 64
        assert (arr < 200).any()  # something is drawn
    panel = text_panel("word " * 200, 64)
    assert panel.shape == (64, 64, 3)
