"""Inline image checks of the ingress, without a server: sizes, pixel counts, URLs, bad data."""

from __future__ import annotations

import pytest

from serve.limits import RequestRejected, decode_inline_image
from serve.settings import LimitsConfig
from tests.serve.images import b64, bomb_png, data_url, png_bytes

LIMITS = LimitsConfig(max_image_bytes=50_000, max_image_pixels=250_000)


def rejected(data: str) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        decode_inline_image(data, LIMITS, "image")
    return info.value


def test_small_image_decodes_to_its_bytes_from_base64_and_data_url() -> None:
    raw = png_bytes(40, 30)
    assert decode_inline_image(b64(raw), LIMITS, "image") == raw
    assert decode_inline_image(data_url(raw), LIMITS, "image") == raw
    # Line breaks, as some encoders wrap base64, are allowed.
    wrapped = "\n".join(b64(raw)[i : i + 76] for i in range(0, len(b64(raw)), 76))
    assert decode_inline_image(wrapped, LIMITS, "image") == raw


def test_too_many_bytes_is_refused_before_decoding() -> None:
    raw = png_bytes(150, 150, noise=True)  # ~68 KB of incompressible pixels
    assert len(raw) > LIMITS.max_image_bytes
    err = rejected(b64(raw))
    assert (err.status, err.code, err.limit, err.maximum) == (
        413,
        "limit_exceeded",
        "limits.max_image_bytes",
        50_000,
    )
    assert err.value is not None and abs(err.value - len(raw)) <= 2


def test_pixel_count_is_read_from_the_header_before_any_decoding() -> None:
    bomb = bomb_png(100_000, 100_000)  # 10 gigapixels declared in 57 bytes, no pixel data
    assert len(bomb) < 100
    err = rejected(b64(bomb))
    assert (err.status, err.limit, err.maximum) == (413, "limits.max_image_pixels", 250_000)
    # Just over the limit, below PIL's own bomb threshold: our limit decides, with the real count.
    err = rejected(b64(bomb_png(501, 500)))
    assert (err.limit, err.value) == ("limits.max_image_pixels", 250_500)
    assert "501x500" in err.message


def test_urls_are_never_fetched() -> None:
    for url in (
        "https://example.com/person.jpg",
        "http://127.0.0.1/x.png",
        "file:///etc/passwd",
        "ftp://h/x",
    ):
        err = rejected(url)
        assert (err.status, err.code) == (422, "image_url_not_allowed"), url


def test_bad_base64_and_non_images_are_invalid_images() -> None:
    assert rejected("not base64 at all!").code == "invalid_image"
    assert rejected(b64(b"GIF89a but not really an image")).code == "invalid_image"
    assert rejected("data:image/png,rawtext").code == "invalid_image"
    assert rejected("").code == "invalid_image"
