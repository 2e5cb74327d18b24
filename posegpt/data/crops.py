"""Person crops, JPEG encoding and guarded image decoding, shared by the prepare job, the detector and the service.

``crop_box`` is the one crop function of the project: the prepare job makes the
``image2pose`` training crops with it, and the detector (``posegpt.detect``) crops
whole photos with it at inference, so the model sees the same kind of input.
``decode_image`` is the only way untrusted image bytes are decoded (the prepare job,
the model's image input and the service all go through it): it checks the byte size,
the pixel count, each side and the aspect ratio, all read from the header, before
any pixel is decoded. With ``limits`` ``L``, decoding one image allocates at most
about ``DECODE_BYTES_PER_PIXEL × L.max_pixels`` bytes.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_IMAGE_SIZE = 336
"""CLIP ViT-L/14-336's input size (LLaVA-1.5)."""
STORED_FORMATS: tuple[str, ...] = ("JPEG", "PNG")
"""Encodings a QA shard stores as they are (other inputs are re-encoded as JPEG)."""


class ImageError(ValueError):
    """An image that cannot be used: it does not decode, or it breaks a limit. The message names the image."""


class ImageLimitError(ImageError):
    """An image over one of ``ImageLimits``: ``limit`` names the field, with the image's ``value``."""

    def __init__(
        self, message: str, *, limit: str, value: float, maximum: float, width: int = 0, height: int = 0
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum
        self.width = width
        self.height = height


@dataclass
class ImageLimits:
    """Limits on untrusted images, checked before they are decoded."""

    max_bytes: int = 20 * 1024 * 1024
    """Largest encoded image accepted, in bytes."""
    max_pixels: int = 40_000_000
    """Largest width × height accepted (read from the header, so a decompression bomb is never decoded)."""
    max_side: int = 12_000
    """Longest width or height accepted, in pixels."""
    max_aspect_ratio: float = 10.0
    """Largest long side / short side accepted: a 1 × 16,000,000 strip is no photo, and squaring it
    for the vision tower would cost the long side squared."""

    def validate(self, where: str = "image_limits") -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.max_side < 1 or self.max_aspect_ratio < 1:
            raise ValueError(
                f"{where}: max_bytes, max_pixels and max_side must be >= 1 and max_aspect_ratio >= 1, got "
                f"{self.max_bytes}, {self.max_pixels}, {self.max_side}, {self.max_aspect_ratio}"
            )


DECODE_BYTES_PER_PIXEL = 8
"""Bound on the bytes ``decode_image`` allocates per pixel: the decoded frame (up to 4 bytes, RGBA or
CMYK) plus its RGB copy (3 bytes), rounded up."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image header says: ``format`` (PIL's name), ``width`` and ``height``."""

    format: str
    width: int
    height: int


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def crop_box(
    image: Any,
    center_xy: Sequence[float],
    box_size_px: float,
    padding: float = 1.2,
    out_size: int = DEFAULT_IMAGE_SIZE,
    fill: int | Sequence[int] = 0,
) -> np.ndarray:
    """A square ``(out_size, out_size, 3)`` uint8 crop centred on ``center_xy``, side ``box_size_px × padding``.

    ``image``: an (H, W, 3) uint8 array or a PIL image. Output pixels whose centres
    fall outside the image are exactly ``fill``: the part of the crop inside the
    image is resized on its own (PIL bicubic, with a sub-pixel source box) and
    pasted onto a filled canvas, so image pixels never bleed into the fill. Same
    inputs, same bytes.
    """
    arr = _as_array(image)
    cx, cy = (float(v) for v in center_xy)
    side = float(box_size_px) * float(padding)
    if not (math.isfinite(cx) and math.isfinite(cy) and math.isfinite(side)) or side <= 0:
        raise ValueError(
            f"crop_box needs a finite center and a positive box, got {center_xy}, {box_size_px} × {padding}"
        )
    if out_size < 1:
        raise ValueError(f"out_size must be >= 1, got {out_size}")
    height, width = arr.shape[:2]
    step = side / out_size
    x0, y0 = cx - side / 2, cy - side / 2

    def covered(origin: float, size: int) -> tuple[int, int]:
        # Output pixels [a, b) whose centres lie inside the image along one axis.
        a = math.floor((0.0 - origin) / step + 0.5)
        b = math.floor((size - origin) / step + 0.5)
        return min(max(a, 0), out_size), min(max(b, 0), out_size)

    ox0, ox1 = covered(x0, width)
    oy0, oy1 = covered(y0, height)
    out = np.empty((out_size, out_size, 3), dtype=np.uint8)
    out[...] = np.asarray(fill, dtype=np.uint8)
    if ox1 > ox0 and oy1 > oy0:
        box = (
            max(0.0, x0 + ox0 * step),
            max(0.0, y0 + oy0 * step),
            min(float(width), x0 + ox1 * step),
            min(float(height), y0 + oy1 * step),
        )
        patch = Image.fromarray(np.ascontiguousarray(arr)).resize(
            (ox1 - ox0, oy1 - oy0), Image.Resampling.BICUBIC, box=box
        )
        out[oy0:oy1, ox0:ox1] = np.asarray(patch)
    return out


def encode_jpeg(image: Any, quality: int = 90) -> bytes:
    """Baseline JPEG bytes (4:2:0, no metadata) of an (H, W, 3) uint8 image: same pixels, same bytes."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be within [1, 100], got {quality}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(_as_array(image))).save(
        buf, format="JPEG", quality=int(quality), optimize=False, progressive=False, subsampling=2
    )
    return buf.getvalue()


def image_info(data: bytes, limits: ImageLimits, name: str) -> ImageInfo:
    """Format and size from the header alone, after the byte-size check; ImageError naming ``name``."""
    if len(data) > limits.max_bytes:
        raise ImageLimitError(
            f"{name}: image is {len(data)} bytes, over the limit of {limits.max_bytes} (image_limits.max_bytes)",
            limit="max_bytes",
            value=len(data),
            maximum=limits.max_bytes,
        )
    if not data:
        raise ImageError(f"{name}: image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data))) as img:
                fmt, (width, height) = str(img.format), img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{name}: image is too large to decode ({exc}); limit {limits.max_pixels} pixels"
        ) from exc
    except Exception as exc:  # PIL raises many types for unreadable headers
        raise ImageError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
    check_shape(int(width), int(height), limits, name)
    return ImageInfo(fmt, int(width), int(height))


def check_shape(width: int, height: int, limits: ImageLimits, name: str) -> None:
    """ImageError unless a ``width`` × ``height`` image is within ``limits``' pixels, sides and aspect ratio."""
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image is {width}×{height} pixels: empty")
    long, short = max(width, height), min(width, height)
    for limit, value, maximum, what in (
        ("max_pixels", width * height, limits.max_pixels, f"= {width * height} pixels"),
        ("max_side", long, limits.max_side, f"pixels; its long side ({long}) is"),
        (
            "max_aspect_ratio",
            long / short,
            limits.max_aspect_ratio,
            f"pixels, an aspect ratio of {long / short:.1f},",
        ),
    ):
        if value > maximum:
            raise ImageLimitError(
                f"{name}: image is {width}×{height} {what} over the limit of {maximum:g} (image_limits.{limit})",
                limit=limit,
                value=value,
                maximum=maximum,
                width=width,
                height=height,
            )


def image_size(data: bytes, limits: ImageLimits, name: str) -> tuple[int, int]:
    """(width, height) from the header, checked against ``limits``; ImageError naming ``name``."""
    info = image_info(data, limits, name)
    return info.width, info.height


def decode_pil(data: bytes, limits: ImageLimits, name: str) -> Image.Image:
    """Decode untrusted image bytes to an RGB ``PIL.Image``, checking ``limits`` before decoding.

    Raises ImageError (a ValueError) naming ``name`` (a file path or sample id) and
    the limit or the decoder's complaint: a truncated or corrupt file is an error,
    not a grey-bottomed image (PIL's lenient truncated-image mode is not used).
    """
    info = image_info(data, limits, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data))) as img:
                # A multi-frame file or a header rewritten after open could differ from what was checked.
                if img.size != (info.width, info.height):
                    raise ValueError(f"decoder size {img.size} differs from the header's")
                img.load()
                return img.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ImportError (plugins), ...
        raise ImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def decode_image(data: bytes, limits: ImageLimits, name: str) -> np.ndarray:
    """Decode untrusted image bytes to (H, W, 3) uint8 RGB (``decode_pil``, as an array)."""
    return np.asarray(decode_pil(data, limits, name), dtype=np.uint8)


def stored_image_bytes(data: bytes, limits: ImageLimits, name: str, quality: int = 90) -> bytes:
    """``data`` itself when it is a JPEG/PNG that decodes within ``limits``, else its pixels re-encoded as JPEG."""
    pixels = decode_image(data, limits, name)
    return (
        bytes(data)
        if image_info(data, limits, name).format in STORED_FORMATS
        else encode_jpeg(pixels, quality)
    )
