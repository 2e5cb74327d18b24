"""Crops, JPEG encoding and guarded decoding."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from posegpt.data.crops import ImageLimits, crop_box, decode_image, encode_jpeg, image_size


def gradient(h: int = 120, w: int = 160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8)


def test_crop_inside_the_image_matches_a_plain_resize() -> None:
    img = gradient()
    out = crop_box(img, (80, 60), 40, padding=1.0, out_size=40)
    # Same scale: the crop is the pixels of the box itself.
    np.testing.assert_array_equal(out, img[40:80, 60:100])
    big = crop_box(img, (80, 60), 40, padding=1.5, out_size=60)
    np.testing.assert_array_equal(big, img[30:90, 50:110])


def test_out_of_image_area_is_exactly_fill() -> None:
    img = np.full((100, 100, 3), 200, np.uint8)
    out = crop_box(img, (0, 50), 50, padding=1.0, out_size=50, fill=7)
    # Box x from -25 to 25: the left half is outside the image.
    assert (out[:, :25] == 7).all()
    assert (out[:, 26:] == 200).all()
    corner = crop_box(img, (100, 100), 40, padding=1.0, out_size=20, fill=(1, 2, 3))
    assert (corner[10:, :] == [1, 2, 3]).all() and (corner[:, 10:] == [1, 2, 3]).all()
    assert (corner[:10, :10] == 200).all()
    away = crop_box(img, (500, 500), 40, padding=1.0, out_size=16)
    assert (away == 0).all()


def test_crops_are_byte_identical_run_to_run() -> None:
    img = gradient()
    a = encode_jpeg(crop_box(img, (33.3, 71.7), 57.9, 1.2, 336))
    b = encode_jpeg(crop_box(img.copy(), (33.3, 71.7), 57.9, 1.2, 336))
    assert a == b and a[:2] == b"\xff\xd8"
    assert crop_box(img, (33.3, 71.7), 57.9).shape == (336, 336, 3)


def test_bad_crop_arguments() -> None:
    with pytest.raises(ValueError, match="positive box"):
        crop_box(gradient(), (10, 10), 0)
    with pytest.raises(ValueError, match="uint8"):
        crop_box(gradient().astype(np.float32), (10, 10), 5)


def test_decode_round_trip_and_limits() -> None:
    img = gradient()
    data = encode_jpeg(img, 95)
    out = decode_image(data, ImageLimits(), "a.jpg")
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 4
    with pytest.raises(ValueError, match=r"a\.jpg.*max_bytes"):
        decode_image(data, ImageLimits(max_bytes=100), "a.jpg")
    with pytest.raises(ValueError, match=r"a\.jpg.*max_pixels"):
        decode_image(data, ImageLimits(max_pixels=100 * 100), "a.jpg")
    with pytest.raises(ValueError, match=r"bad\.jpg.*cannot decode"):
        decode_image(data[: len(data) // 2], ImageLimits(), "bad.jpg")
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(b"not an image", ImageLimits(), "text.jpg")


def _png_bomb(side: int) -> bytes:
    """A valid PNG header claiming ``side``×``side`` pixels followed by a tiny compressed body."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    # Rewrite the IHDR width/height and fix its CRC: the header now claims a huge image.
    png[16:24] = side.to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    return bytes(png)


def test_dimensions_are_checked_before_decoding() -> None:
    bomb = _png_bomb(30_000)
    assert len(bomb) < 200
    with pytest.raises(ValueError, match=r"bomb\.png.*(max_pixels|too large)"):
        image_size(bomb, ImageLimits(), "bomb.png")
    with pytest.raises(ValueError, match=r"bomb\.png"):
        decode_image(bomb, ImageLimits(), "bomb.png")
