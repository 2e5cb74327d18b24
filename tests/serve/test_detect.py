"""``detect: true``: the service finds the people in a whole image and answers once per person.

A second application on the session's Serve serves the ``posing_checkpoint_dir``
model with the synthetic world's person detector. Each person's answer must be
the model's answer for the crop computed here with the library's detector and
crop function, sent as a plain image query in the same request.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from posegpt.data.crops import crop_box, encode_jpeg
from posegpt.detect import box_iou
from tests.fixtures.model import POSING_SAMPLES

pytestmark = pytest.mark.slow

PROMPT = POSING_SAMPLES[0]["prompt"]
CROP_SIZE = 64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def detect_url(serve_http: str, posing_checkpoint_dir: Path, synthetic_detector) -> Iterator[str]:
    from ray import serve

    from serve.app import app

    det = synthetic_detector.config
    application = app(
        {
            "checkpoint": str(posing_checkpoint_dir),
            "generation.max_new_tokens": "16",
            "model.num_cpus": "0",
            "ingress.num_cpus": "0",
            "detector.weights": det.weights,
            "detector.image_size": str(det.image_size),
            "detector.padding": str(det.padding),
            "detect_crop_size": str(CROP_SIZE),
            "detector_deployment.num_cpus": "0",
            "detector_deployment.autoscaling": "false",
            "limits.max_model_calls": "6",
        }
    )
    serve.run(application, name="detect", route_prefix="/detect")
    yield f"{serve_http}/detect"
    serve.delete("detect")


@pytest.fixture(scope="module")
def scene(synthetic_detector) -> tuple[bytes, list]:
    """A held-out 3-person scene in which the detector finds the three people, and its boxes."""
    detector = synthetic_detector.detector()
    for item in synthetic_detector.held_out:
        if item.kind != "scene" or len(item.boxes) != 3:
            continue
        with Image.open(item.path) as im:
            pixels = np.asarray(im.convert("RGB"))
        boxes = detector.detect_one(pixels)
        if (
            len(boxes) == 3
            and (box_iou(np.array([b.xyxy for b in boxes]), item.boxes).max(axis=0) >= 0.5).all()
        ):
            return item.path.read_bytes(), boxes
    pytest.fail("no held-out 3-person scene where the detector finds everyone")


def test_one_answer_per_person_with_its_box(detect_url: str, scene, synthetic_detector) -> None:
    data, boxes = scene
    with Image.open(io.BytesIO(data)) as im:
        pixels = np.asarray(im.convert("RGB"))
    padding = synthetic_detector.config.padding
    crops = [encode_jpeg(crop_box(pixels, b.center, b.size, padding, CROP_SIZE), 95) for b in boxes]
    queries = [{"text": PROMPT, "image": _b64(data), "detect": True}]
    queries += [{"text": PROMPT, "image": _b64(crop)} for crop in crops]
    response = httpx.post(f"{detect_url}/v1/poses", json={"queries": queries}, timeout=300)
    assert response.status_code == 200, response.text
    detected, *direct = response.json()["results"]
    people = detected["people"]
    assert len(people) == 3
    for person, box, answer in zip(people, boxes, direct, strict=True):
        np.testing.assert_allclose(person["box"], box.xyxy, atol=0.01)
        assert person["score"] == pytest.approx(box.score, abs=1e-3)
        assert person["text"] == answer["text"]
        assert len(person["poses"]) == len(answer["poses"])
        for got, want in zip(person["poses"], answer["poses"], strict=True):
            np.testing.assert_allclose(got["axis_angle"], want["axis_angle"], atol=1e-3)
    assert [p["id"] for p in detected["poses"]] == [p["id"] for person in people for p in person["poses"]]
    assert detected["timings"]["detect_ms"] > 0
    assert detected["text"].splitlines()[0].startswith("Person 1: ")
    assert all(r.get("people") is None for r in direct)


def test_chat_with_detect_and_an_image_without_people(detect_url: str, scene) -> None:
    data, boxes = scene
    body = {"messages": [{"role": "user", "content": PROMPT}], "image": _b64(data), "detect": True}
    response = httpx.post(f"{detect_url}/v1/chat", json=body, timeout=300)
    assert response.status_code == 200, response.text
    assert [p["box"] for p in response.json()["people"]] == [[round(v, 2) for v in b.xyxy] for b in boxes]

    grey = io.BytesIO()
    Image.new("RGB", (128, 128), (120, 120, 120)).save(grey, format="PNG")
    body["image"] = _b64(grey.getvalue())
    empty = httpx.post(f"{detect_url}/v1/chat", json=body, timeout=300).json()
    assert empty["people"] == [] and empty["poses"] == [] and empty["text"] == "No person found in the image."


def test_detect_needs_an_image_and_a_detector(detect_url: str) -> None:
    response = httpx.post(
        f"{detect_url}/v1/poses", json={"queries": [{"text": PROMPT, "detect": True}]}, timeout=60
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "queries[0]: detect needs an image"


def test_model_work_of_one_request_is_bounded(detect_url: str, scene) -> None:
    """3 people found + 4 plain queries = 7 model queries, over limits.max_model_calls = 6 here."""
    data, _ = scene
    queries = [{"text": PROMPT, "image": _b64(data), "detect": True}] + [{"text": PROMPT}] * 4
    response = httpx.post(f"{detect_url}/v1/poses", json={"queries": queries}, timeout=300)
    assert response.status_code == 422, response.text
    err = response.json()["error"]
    assert (err["limit"], err["value"], err["maximum"]) == ("limits.max_model_calls", 7, 6)
    # One query fewer fits.
    response = httpx.post(f"{detect_url}/v1/poses", json={"queries": queries[:4]}, timeout=300)
    assert response.status_code == 200 and len(response.json()["results"][0]["people"]) == 3


def test_service_without_detector_refuses_detect(tmp_path: Path) -> None:
    from posegpt.config import ConfigError
    from serve.detector import load_detector
    from serve.settings import config_from_args

    cfg = config_from_args({"checkpoint": str(tmp_path)})
    assert load_detector(cfg) == (None, "this service has no person detector (detector.weights is not set)")
    with pytest.raises(ConfigError, match=f"detector.weights: {tmp_path / 'none.pt'} does not exist"):
        config_from_args({"checkpoint": str(tmp_path), "detector.weights": str(tmp_path / "none.pt")})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    detector, why = load_detector(
        config_from_args({"checkpoint": str(tmp_path), "detector.weights": str(bad)})
    )
    # The reason names no local path (it is sent to clients); the replica log has the details.
    assert detector is None and "did not load" in why and str(tmp_path) not in why
