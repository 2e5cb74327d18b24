"""Images into pixel values for the CLIP tower, with the checks a user-supplied file needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posegpt.data.crops import ImageLimits, check_shape, decode_pil

IMAGE_LIMITS = ImageLimits()
"""Limits on every image the model decodes: the project's one set (``posegpt.data.crops.ImageLimits``)."""

ImageInput = bytes | bytearray | memoryview | str | Path | np.ndarray | Any
"""Encoded bytes, a file path, an HxWx3 uint8 array or a ``PIL.Image``."""


def decode_image(data: ImageInput, where: str, limits: ImageLimits = IMAGE_LIMITS) -> Any:
    """An RGB ``PIL.Image`` from encoded bytes, a path, an array or an image; ValueError naming ``where``.

    Encoded bytes go through ``posegpt.data.crops.decode_pil`` (size, sides and aspect ratio checked
    from the header before decoding); arrays and images are held to the same ``limits``.
    """
    from PIL import Image

    if isinstance(data, Image.Image):
        check_shape(data.width, data.height, limits, where)
        return data.convert("RGB")
    if isinstance(data, np.ndarray):
        if data.ndim != 3 or data.shape[2] not in (3, 4) or data.dtype != np.uint8:
            raise ValueError(f"{where}: an image array must be HxWx3 uint8, got {data.shape} {data.dtype}")
        check_shape(data.shape[1], data.shape[0], limits, where)
        return Image.fromarray(np.ascontiguousarray(data[..., :3]))
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image file {path} does not exist")
        data = path.read_bytes()
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"{where}: unsupported image type {type(data).__name__}")
    return decode_pil(bytes(data), limits, where)


def pad_to_square(image: Any, mean: Sequence[float], max_side: int | None = None) -> Any:
    """Pad the short side with the processor's mean colour, as LLaVA-1.5 trains ("pad" aspect mode).

    A centre crop of a tall person crop would cut off the head and feet. With ``max_side``,
    an image whose long side is longer is first scaled down to it, so the square canvas
    costs at most ``max_side``² pixels whatever the image's shape.
    """
    from PIL import Image

    w, h = image.size
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
    if w == h:
        return image
    side = max(w, h)
    colour = tuple(round(c * 255) for c in mean)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _input_side(image_processor: Any) -> int | None:
    """The square side the processor resizes to (CLIP: ``crop_size``, else ``size``), if it says."""
    for attr in ("crop_size", "size"):
        value = getattr(image_processor, attr, None)
        if isinstance(value, Mapping):
            sides = [int(v) for k, v in value.items() if k in ("height", "width", "shortest_edge")]
            if sides:
                return max(sides)
        elif isinstance(value, int):
            return value
    return None


def pixel_values(image_processor: Any, images: Sequence[Any]) -> torch.Tensor:
    """(N, 3, H, W) float pixel values for RGB ``PIL`` images."""
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    # Scaling down before padding bounds the canvas; the processor scales to this side anyway.
    side = _input_side(image_processor)
    squared = [pad_to_square(img, mean, None if side is None else 2 * side) for img in images]
    out = image_processor(images=squared, return_tensors="pt")
    return out["pixel_values"]


def image_inputs(
    image_processor: Any, images: Sequence[Any], pose_encoder: Any = None
) -> dict[str, torch.Tensor]:
    """Model inputs for RGB ``PIL`` images: ``pixel_values`` for CLIP (unless the pose encoder replaces it) and
    ``pose_pixel_values`` for the pose encoder of ``pose_encoder`` (a ``PoseEncoderConfig``) when one is enabled."""
    from posegpt.vision.pose_encoder import pose_pixel_values

    with_pose = pose_encoder is not None and pose_encoder.enabled
    out: dict[str, torch.Tensor] = {}
    if not with_pose or pose_encoder.mode == "append":
        out["pixel_values"] = pixel_values(image_processor, images)
    if with_pose:
        out["pose_pixel_values"] = pose_pixel_values(images, pose_encoder)
    return out


def num_image_tokens(llava_config: Any) -> int:
    """Vision tokens one image becomes in the language model: patches, plus CLS unless dropped."""
    vision = llava_config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2
    return n if llava_config.vision_feature_select_strategy == "default" else n + 1
