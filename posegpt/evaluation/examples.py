"""Rendered examples for the report: input (image or text), predicted body, ground-truth body.

For each task the best, median and worst rows by the model's PA-MPJPE are drawn
side by side with ``posegpt.render``; text inputs become a panel of wrapped text.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw, ImageFont

from posegpt.body.model import BodyModel
from posegpt.render import part_face_colors, render_views, save_png, side_by_side
from posegpt.storage import StorageConfig, arrow_filesystem

CASES: tuple[str, ...] = ("best", "median", "worst")


def pick_cases(errors: np.ndarray) -> dict[str, int]:
    """Row index of the lowest, median and highest error (median: the lower middle of a sorted copy)."""
    if len(errors) == 0:
        raise ValueError("pick_cases: no errors to pick from")
    order = np.argsort(errors, kind="stable")
    return {"best": int(order[0]), "median": int(order[(len(order) - 1) // 2]), "worst": int(order[-1])}


def text_panel(text: str, size: int) -> np.ndarray:
    """A square light panel with ``text`` wrapped to fit it (the input of text tasks)."""
    img = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(9, size // 16))
    # Characters per line from the font's average glyph width, so the text stays inside the panel.
    width_chars = max(8, int((size - 12) / max(font.getlength("abcdefghij") / 10.0, 1.0)))
    lines = textwrap.wrap(text, width=width_chars)
    line_h = int(font.size * 1.25)
    max_lines = max(1, (size - 8) // line_h)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][: width_chars - 1] + "…"]
    for i, line in enumerate(lines):
        draw.text((6, 4 + i * line_h), line, fill=(20, 20, 20), font=font)
    return np.asarray(img)


def read_images(
    files: Sequence[str], sample_ids: Sequence[str], storage: StorageConfig | None
) -> dict[str, bytes]:
    """Image bytes of a few rows, read by ``sample_id`` from their shard files."""
    wanted = set(sample_ids)
    found: dict[str, bytes] = {}
    for f in files:
        fs, path = arrow_filesystem(f, storage)
        table = pq.read_table(
            path, columns=["sample_id", "image"], filesystem=fs, filters=[("sample_id", "in", sorted(wanted))]
        )
        for sid, img in zip(
            table.column("sample_id").to_pylist(), table.column("image").to_pylist(), strict=True
        ):
            if img is not None:
                found[str(sid)] = img
        if wanted <= found.keys():
            break
    return found


class BodyRenderer:
    """Front and side views of posed bodies."""

    def __init__(self, body: BodyModel, size: int) -> None:
        self.body = body
        self.size = size
        self.colors = part_face_colors(body.faces, body.skinning_weights.detach().cpu().numpy())

    @torch.no_grad()
    def views(self, pose: np.ndarray) -> np.ndarray:
        verts = (
            self.body.mesh(torch.as_tensor(pose, dtype=torch.float32).reshape(1, -1))
            .vertices[0]
            .cpu()
            .numpy()
        )
        return render_views(verts, self.body.faces, self.colors, size=self.size, supersample=1)


def render_example(
    out_path: Path,
    renderer: BodyRenderer,
    pred: np.ndarray,
    gt: np.ndarray,
    image: bytes | None,
    text: str,
    title: str,
) -> Path:
    """One PNG: input, predicted body (front, side), ground truth (front, side)."""
    from posegpt.model.vision_input import decode_image

    size = renderer.size
    panel = np.asarray(decode_image(image, title)) if image is not None else text_panel(text, size)
    row = side_by_side(
        [panel, renderer.views(pred), renderer.views(gt)],
        [title, "predicted", "ground truth"],
        height=size,
    )
    return save_png(out_path, row)
