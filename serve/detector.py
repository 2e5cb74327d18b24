"""The person detector as its own deployment, scaling apart from the HTTP ingress and the model.

``detect: true`` requests send the whole image here; each replica holds one
``posegpt.detect.PersonDetector`` and answers with the people it finds, best score
first, each with its box and the square crop the model is asked about (the prepare
job's crop, JPEG-encoded). Detection runs in a worker thread, one image at a time per
replica (the detector is not shared between threads), so the replica keeps answering
Serve's calls while it works. With ``detector.weights`` unset every call answers
``detector_unavailable``; in ``serve/config.yaml`` the deployment then scales to zero.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve

from posegpt.config import from_dict
from serve.settings import ServeConfig

logger = logging.getLogger("ray.serve")


@serve.deployment(name="PersonDetector")
class PersonDetectorDeployment:
    """``detect(image, where, request_id)`` → ``{"people": [{"box", "score", "crop"}]}`` or ``{"error": ...}``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from posegpt.runtime import setup_environment

        cfg = from_dict(ServeConfig, settings)
        setup_environment(cfg.cache_dir)
        self.cfg = cfg
        self.detector, self.unavailable = load_detector(cfg)
        self._lock = threading.Lock()

    async def detect(self, image: bytes, where: str, request_id: str) -> dict[str, Any]:
        if self.detector is None:
            status = 503 if self.cfg.detector.weights else 422
            return {"error": {"status": status, "code": "detector_unavailable", "message": self.unavailable}}
        return await asyncio.to_thread(self._people, image, where, request_id)

    def _people(self, image: bytes, where: str, request_id: str) -> dict[str, Any]:
        from posegpt.data.crops import ImageError, decode_image, encode_jpeg
        from posegpt.detect import detect_and_crop

        try:
            pixels = decode_image(image, self.cfg.limits.image_limits(), where)
        except ImageError:
            # The ingress checked and decoded this image already: log the decoder's words, send none.
            logger.exception("PersonDetector: request %s: image did not decode", request_id)
            return {
                "error": {
                    "status": 422,
                    "code": "invalid_image",
                    "message": f"{where}: the image does not decode",
                }
            }
        with self._lock:
            crops = detect_and_crop(pixels, self.detector, self.cfg.detect_crop_size)
        return {
            "people": [
                {
                    "box": [float(v) for v in c.box.xyxy],
                    "score": float(c.box.score),
                    "crop": encode_jpeg(c.image, 95),
                }
                for c in crops
            ]
        }


def load_detector(cfg: ServeConfig) -> tuple[Any, str]:
    """The person detector of ``cfg``, or None and why (detection off, or weights that do not load)."""
    if not cfg.detector.weights:
        return None, "this service has no person detector (detector.weights is not set)"
    try:
        from posegpt.detect import PersonDetector

        return PersonDetector(cfg.detector), ""
    except Exception:  # a bad weights file fails detect requests only, not the whole service
        logger.exception("the person detector did not load")
        return None, "the person detector did not load (see the PersonDetector replica's log)"


__all__ = ["PersonDetectorDeployment", "load_detector"]
