"""Images into pixel values for the CLIP tower, with the checks a user-supplied file needs."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_IMAGE_PIXELS = 64_000_000
"""Images with more pixels are refused before decoding (a decompression bomb, not a photo)."""

ImageInput = bytes | bytearray | memoryview | str | Path | np.ndarray | Any
"""Encoded bytes, a file path, an HxWx3 uint8 array or a ``PIL.Image``."""


def decode_image(data: ImageInput, where: str) -> Any:
    """An RGB ``PIL.Image`` from encoded bytes, a path, an array or an image; ValueError naming ``where``."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, Image.Image):
        return data.convert("RGB")
    if isinstance(data, np.ndarray):
        if data.ndim != 3 or data.shape[2] not in (3, 4) or data.dtype != np.uint8:
            raise ValueError(f"{where}: an image array must be HxWx3 uint8, got {data.shape} {data.dtype}")
        return Image.fromarray(data[..., :3])
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image file {path} does not exist")
        data = path.read_bytes()
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"{where}: unsupported image type {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{where}: the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{where}: image of {img.width}x{img.height} pixels exceeds {MAX_IMAGE_PIXELS}"
                )
            img.load()
            return img.convert("RGB")
    # ImportError: once Ultralytics is imported it patches Image.open to retry unknown formats
    # through pi_heif, which is not installed, so a corrupt image raises ModuleNotFoundError.
    except (UnidentifiedImageError, OSError, SyntaxError, ImportError) as exc:
        raise ValueError(f"{where}: the image does not decode ({exc})") from exc


def pad_to_square(image: Any, mean: Sequence[float]) -> Any:
    """Pad the short side with the processor's mean colour, as LLaVA-1.5 trains ("pad" aspect mode).

    A centre crop of a tall person crop would cut off the head and feet.
    """
    from PIL import Image

    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    colour = tuple(round(c * 255) for c in mean)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def pixel_values(image_processor: Any, images: Sequence[Any]) -> torch.Tensor:
    """(N, 3, H, W) float pixel values for RGB ``PIL`` images."""
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    squared = [pad_to_square(img, mean) for img in images]
    out = image_processor(images=squared, return_tensors="pt")
    return out["pixel_values"]


def num_image_tokens(llava_config: Any) -> int:
    """Vision tokens one image becomes in the language model: patches, plus CLS unless dropped."""
    vision = llava_config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2
    return n if llava_config.vision_feature_select_strategy == "default" else n + 1
