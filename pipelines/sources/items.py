"""Work items: what a reader yields for each candidate row, accepted or rejected.

Readers parse the raw files (cheap) and yield plain JSON-able dicts; the heavy
work (reading and decoding images, cropping, encoding, template expansion,
validation) happens in ``pipelines.transforms`` on Ray Data workers. A reader
never raises for bad data: it yields a reject item whose reason names the file
or id, so read = accepted + rejected always holds.

Item keys:

- ``input``: the name of the source section in the prepare config (counts are kept per input)
- ``sample_id``, ``task``, ``source``, ``split``, ``file`` (provenance: the raw file it came from)
- ``reject``: a reason (only in reject items; the other keys may then be partial)
- ``image``: ``{"uri": path or s3:// URI, "crop": [cx, cy, box_px] or None}``, or None
- ``poses``: list of 72-float lists, or None; ``betas``: 10 floats or None
- ``text``: the description a pose template is filled with (text2pose, spg, rpe)
- ``conversation``: ready-made ``{role, content}`` turns (vqa)
- ``caption``, ``label_source``, ``meta`` (dict)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from posegpt.body.skeleton import NUM_BETAS

Item = dict[str, Any]


def as_floats(values: Any) -> list[float]:
    """A flat list of Python floats (float32-rounded, as the shards store them)."""
    return [float(v) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def shape_floats(betas: Any, has_betas: Any = None) -> list[float] | None:
    """A row's betas: the first ``NUM_BETAS`` values, or None when absent or flagged invalid.

    SPIN's and HMR 2.0's files carry a ``has_betas`` flag beside fitted shapes; a fit
    flagged 0 is noise, not a shape. Fewer values than ``NUM_BETAS`` are kept as they
    are, so that validation names the row.
    """
    if betas is None or (has_betas is not None and float(np.asarray(has_betas).reshape(-1)[0]) <= 0):
        return None
    return as_floats(np.asarray(betas, dtype=np.float64).reshape(-1)[:NUM_BETAS])


def row_item(
    input_name: str,
    sample_id: str,
    task: str,
    source: str,
    split: str,
    file: str,
    *,
    image: dict[str, Any] | None = None,
    poses: list[list[float]] | None = None,
    betas: list[float] | None = None,
    text: str | None = None,
    conversation: list[dict[str, str]] | None = None,
    caption: str | None = None,
    label_source: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Item:
    """An item that becomes a row once transformed (unless validation rejects it)."""
    return {
        "input": input_name,
        "sample_id": sample_id,
        "task": task,
        "source": source,
        "split": split,
        "file": file,
        "image": image,
        "poses": poses,
        "betas": betas,
        "text": text,
        "conversation": conversation,
        "caption": caption,
        "label_source": label_source,
        "meta": meta or {},
    }


def reject_item(
    input_name: str,
    source: str,
    file: str | None,
    reason: str,
    sample_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Item:
    """A candidate dropped while reading; ``reason`` names the file or id and what is wrong."""
    return {
        "input": input_name,
        "sample_id": sample_id,
        "source": source,
        "file": file,
        "reject": reason,
        "meta": meta or {},
    }


def in_part(part: dict[str, Any] | None, index: int) -> bool:
    """Whether entry ``index`` of a source belongs to ``part`` (``{"stride": k, "offset": j}``: every k-th)."""
    return part is None or index % int(part["stride"]) == int(part["offset"])


def owns_shared(part: dict[str, Any] | None) -> bool:
    """Whether ``part`` reports what concerns the whole source (a missing file, a caption of an unknown id)."""
    return part is None or int(part.get("offset", 0)) == 0
