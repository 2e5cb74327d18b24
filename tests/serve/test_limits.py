"""Inline image checks of the ingress, without a server: sizes, pixel counts, URLs, bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from serve.limits import RequestRejected, check_texts, decode_inline_image
from serve.settings import LimitsConfig
from tests.serve.images import b64, bomb_png, data_url, png_bytes

LIMITS = LimitsConfig(max_image_bytes=50_000, max_image_pixels=250_000, max_image_side=1000)


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


def test_sides_and_aspect_ratio_are_read_from_the_header() -> None:
    err = rejected(b64(bomb_png(1, 200_000)))  # within the pixel limit, no pixel data at all
    assert (err.status, err.limit, err.value, err.maximum) == (413, "limits.max_image_side", 200_000, 1000)
    err = rejected(b64(bomb_png(450, 100)))
    assert (err.limit, err.value, err.maximum) == ("limits.max_image_aspect_ratio", 4.5, 4.0)


def test_the_issues_strips_are_refused_with_the_shipped_limits() -> None:
    """1 × 16,000,000 and 1000 × 16000 were within the pixel limit; squared they cost 16M² and 16000² pixels."""
    for width, height in ((1, 16_000_000), (1000, 16000)):
        with pytest.raises(RequestRejected) as info:
            decode_inline_image(b64(bomb_png(width, height)), LimitsConfig(), "image")
        assert (info.value.status, info.value.limit) == (413, "limits.max_image_side")
        assert width * height <= LimitsConfig().max_image_pixels


def test_data_url_types_outside_the_allow_list_are_refused_before_decoding() -> None:
    for mime in ("image/tiff", "image/bmp", "image/svg+xml", "text/html"):
        err = rejected(f"data:{mime};base64,{b64(png_bytes(8, 8))}")
        assert err.code == "invalid_image" and "not accepted" in err.message, mime
    assert decode_inline_image(data_url(png_bytes(8, 8), "image/PNG"), LIMITS, "image")


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(RequestRejected, match="lone surrogate at character 2") as info:
        check_texts(["ok", "ab\ud800"], LIMITS, "messages")
    assert info.value.status == 422
    check_texts(["caf\u00e9 \U0001f600"], LIMITS, "messages")


def test_image_limits_have_one_source_shared_with_the_data_jobs() -> None:
    from posegpt.data.crops import ImageLimitError, image_info
    from posegpt.model.vision_input import IMAGE_LIMITS
    from serve.settings import LimitsConfig
    from tests.serve.images import bomb_png

    # The model's own decoder refuses a 1 × 16,000,000 header (the issue's 30 KB image) before decoding.
    with pytest.raises(ImageLimitError) as info:
        image_info(bomb_png(1, 16_000_000), IMAGE_LIMITS, "strip.png")
    assert info.value.limit == "max_side"
    limits = LimitsConfig(max_image_side=640, max_image_aspect_ratio=3.0).image_limits()
    assert (limits.max_side, limits.max_aspect_ratio) == (640, 3.0)


def test_pad_to_square_costs_at_most_the_bound_whatever_the_shape() -> None:
    from posegpt.model.vision_input import pad_to_square

    tall = Image.fromarray(np.full((3000, 40, 3), 200, np.uint8))
    squared = pad_to_square(tall, (0.5, 0.5, 0.5), max_side=672)
    assert squared.size == (672, 672)
    small = Image.fromarray(np.full((300, 100, 3), 200, np.uint8))
    assert pad_to_square(small, (0.5, 0.5, 0.5), max_side=672).size == (300, 300)


def test_an_error_quoting_a_lone_surrogate_still_encodes() -> None:
    from serve.errors import error_response

    response = error_response(422, "invalid_request", "body.\ud800: Extra inputs are not permitted", "r1")
    body = json.loads(response.body)
    assert body["error"]["message"] == "body.\\ud800: Extra inputs are not permitted"
