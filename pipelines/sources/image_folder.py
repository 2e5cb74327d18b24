"""Image folders without annotations → one ``person_crop`` row per detected person.

Every ``.jpg``/``.jpeg``/``.png`` under ``path`` (recursively, in name order) goes
through the person detector of ``sources.<name>.detector`` (``posegpt.detect``),
in batches. Each person found becomes a work item whose image is a crop around
the detected box (cropped by the transform with ``posegpt.data.crops.crop_box``, like
every other crop) and whose conversation is one user turn asking for the pose:
a query row for prediction, with no answer and no pose. ``meta`` keeps the
image, the box, its score and the detector. An image in which nobody is found
becomes a reject saying so, and one that does not decode a reject naming the
file, so read = accepted + rejected still holds.

Splits: with ``split`` set, every image is in it; otherwise images under a
sub-folder named like one of ``splits`` (``train/``, ``val/``, ``test/``) are in
that split and the rest in ``train``.

Detection runs in the reader, inside the job's read tasks on the workers (CPU or
the GPU of the detector's ``device``), batched; each task takes every k-th image of
the listing (its ``part``). The crops and encoding run in the transform.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np
import pyarrow.fs as pafs

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext, dataset_name
from pipelines.sources.items import Item, in_part, owns_shared, reject_item, row_item
from posegpt.data.crops import ImageError, ImageLimits, decode_image
from posegpt.data.templates import expand
from posegpt.detect import DetectorConfig, PersonDetector
from posegpt.storage import arrow_filesystem

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
"""Files read as images (case-insensitive)."""

TASK = "person_crop"
"""Task of the rows written here: a person crop and a pose question, no answer."""


_DETECTORS: dict[str, PersonDetector] = {}


def detector_for(cfg: DetectorConfig) -> PersonDetector:
    """One loaded model per detector config for the whole process (readers run once per source)."""
    key = repr(cfg)
    if key not in _DETECTORS:
        _DETECTORS[key] = PersonDetector(cfg)
    return _DETECTORS[key]


def list_images(folder: str, ctx: ReadContext) -> list[str]:
    """Paths of the image files under ``folder`` (local or ``s3://``), relative to it, sorted."""
    fs, root = arrow_filesystem(folder, ctx.storage)
    prefix = root.rstrip("/") + "/"
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=False))
    return sorted(
        info.path[len(prefix) :]
        for info in infos
        if info.type == pafs.FileType.File and info.path.lower().endswith(IMAGE_SUFFIXES)
    )


def split_of(rel: str, source: SourceConfig) -> str:
    """The split of an image given its path relative to the folder."""
    if source.split:
        return source.split
    top = PurePosixPath(rel).parts[0] if len(PurePosixPath(rel).parts) > 1 else ""
    return top if top in source.splits else "train"


def read(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``person_crop`` items: the people found in every image of the folder (or of ``part``'s share),
    image by image, best score first."""
    dataset = dataset_name(name, source)
    folder = ctx.path(source.path)
    if not ctx.is_dir(folder):
        if owns_shared(part):
            yield reject_item(name, dataset, folder, f"image_folder: {folder} is not a folder")
        return
    det_cfg = source.detector
    limits = ImageLimits()
    listed = list_images(folder, ctx)
    if not listed:
        if owns_shared(part):
            yield reject_item(
                name, dataset, folder, f"image_folder: no {'/'.join(IMAGE_SUFFIXES)} files under {folder}"
            )
        return
    rels = [rel for k, rel in enumerate(listed) if in_part(part, k)]
    weights = PurePosixPath(str(det_cfg.weights)).name
    detector = detector_for(det_cfg) if rels else None
    for start in range(0, len(rels), det_cfg.batch_size):
        decoded: list[tuple[str, str, np.ndarray]] = []
        for rel in rels[start : start + det_cfg.batch_size]:
            uri = f"{folder.rstrip('/')}/{rel}"
            try:
                pixels = decode_image(ctx.read(uri), limits, uri)
            except (FileNotFoundError, ImageError) as exc:
                yield reject_item(
                    name, dataset, uri, f"image_folder: {exc}", f"{dataset}:{rel}", {"image": rel}
                )
                continue
            decoded.append((uri, rel, pixels))
        assert detector is not None
        found = detector.detect([pixels for _, _, pixels in decoded])
        for (uri, rel, pixels), boxes in zip(decoded, found, strict=True):
            height, width = pixels.shape[:2]
            split = split_of(rel, source)
            base = {"file": uri, "image": rel, "image_size": [width, height], "detector": weights}
            if not boxes:
                reason = (
                    f"no person detected in {uri} (detector {weights}, min_score {det_cfg.min_score}, "
                    f"min_box_size_px {det_cfg.min_box_size_px})"
                )
                yield reject_item(name, dataset, uri, reason, f"{dataset}:{rel}", {**base, "people": 0})
                continue
            for k, box in enumerate(boxes):
                sid = f"{dataset}:{rel}:{k}"
                conversation, templates = expand("image2pose", None, sid, ctx.seed)
                cx, cy = box.center
                crop_side = box.size * det_cfg.padding
                yield row_item(
                    name,
                    sid,
                    TASK,
                    dataset,
                    split,
                    uri,
                    # The detector's padding plays the part of the 1.2 that SPIN/HMR2 boxes carry.
                    image={"uri": uri, "crop": [cx, cy, crop_side]},
                    conversation=conversation[:1],
                    meta={
                        **base,
                        "person": k,
                        "people": len(boxes),
                        "bbox": box.to_dict()["xyxy"],
                        "score": box.to_dict()["score"],
                        # The crop as the SPIN/HMR2 readers record it: centre and padded box side (exact).
                        "center": [cx, cy],
                        "box_size": crop_side,
                        "box_padding": det_cfg.padding,
                        "templates": {"question": templates["question"]},
                    },
                )
