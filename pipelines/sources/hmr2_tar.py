"""HMR 2.0's training data: webdataset tar shards → ``image2pose`` items.

4D-Humans ships its training sets as tar shards (``hmr2_training_data/dataset_tars/
<set>/000000.tar`` ...; ``hmr2/configs/datasets_tar.yaml`` lists them). A shard
holds samples as consecutive members that share a key (the member name up to the
first dot of its file name): ``<key>.jpg`` (the whole image), ``<key>.data.pyd``
(a pickle of a list with one dict per annotated person) and optionally
``<key>.detection.npz`` (masks, not used here). Each person dict holds
``center`` (2,) and ``scale`` (2,) [w, h] in units of 200 pixels (the box side is
``max(scale) * 200``, as 4D-Humans crops it), ``body_pose`` (72: global orientation
+ 23 body joints, axis-angle, camera frame), ``has_body_pose``, ``betas`` (10),
``has_betas``, ``keypoints_2d``/``keypoints_3d`` and ``extra_info``.

Each person becomes a row ``<dataset>:<shard>/<key>:<person>`` whose crop is cut
by the transform from the image bytes carried with the item. ``data.pyd`` is read
through ``pipelines.sources.safe_pickle`` (never running code); a ``<key>.json``
with the same fields is accepted too. Nothing is dropped silently: a person
without SMPL ground truth, a sample without its annotation or its image, a
refused pickle and a shard that ends early (truncated download) each become a
reject naming the shard (and key).

``path`` is one ``.tar``, a folder of ``*.tar`` shards, or a brace pattern as in
4D-Humans' config (``dataset_tars/coco-train-2014-pruned/{000000..000017}.tar``);
each shard is read by its own task, streamed (the shard is never held whole).
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext, dataset_name
from pipelines.sources.items import Item, as_floats, reject_item, row_item, shape_floats
from pipelines.sources.safe_pickle import UnsafePickleError, restricted_loads
from posegpt.body.skeleton import POSE_DIM
from posegpt.storage import arrow_filesystem

BOX_UNIT = 200.0
"""``scale`` is the box side in units of 200 pixels (4D-Humans multiplies by 200 before cropping)."""
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png")
ANNOTATION_EXTENSIONS: tuple[str, ...] = ("data.pyd", "json")

_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a/{000..002}.tar`` → ``a/000.tar``, ``a/001.tar``, ``a/002.tar`` (zero padding kept)."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first)
    out = []
    for i in range(int(first), int(last) + 1):
        out.extend(expand_braces(pattern[: match.start()] + str(i).zfill(width) + pattern[match.end() :]))
    return out


def shard_files(source: SourceConfig, ctx: ReadContext) -> list[str]:
    """The shards of ``path``: one file, a brace pattern, or every ``*.tar`` of a folder (sorted)."""
    path = ctx.path(source.path)
    if _BRACES.search(path):
        return expand_braces(path)
    if path.endswith(".tar"):
        return [path]
    fs, root = arrow_filesystem(path, ctx.storage)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=True))
    names = sorted(
        i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".tar")
    )
    return [f"{path.rstrip('/')}/{n}" for n in names]


def plan(name: str, source: SourceConfig, ctx: ReadContext) -> list[dict]:
    """One part per shard (one part naming no shard when there is none, so the job reports it)."""
    return [{"file": uri} for uri in shard_files(source, ctx)] or [{"file": None}]


class _HashingReader:
    """A read-only stream that hashes what passes through it (the shard's digest without a second read)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size) if size is not None and size >= 0 else self.raw.read()
        self.sha.update(data)
        return data


def split_member(name: str) -> tuple[str, str]:
    """webdataset's rule: key = path up to the first dot of the file name, extension = the rest."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _annotations(members: dict[str, bytes]) -> list[dict[str, Any]]:
    if "data.pyd" in members:
        data = restricted_loads(members["data.pyd"])
    else:
        data = json.loads(members["json"])
    people = data if isinstance(data, list) else [data]
    if not all(isinstance(p, dict) for p in people):
        raise ValueError("annotation is not a dict or a list of dicts")
    return people


def _person(
    name: str, dataset: str, split: str, uri: str, shard: str, key: str, k: int, person: dict, image: dict
) -> Item:
    sid = f"{dataset}:{shard}/{key}:{k}"
    meta: dict[str, Any] = {"file": uri, "key": key, "person": k, "format": "hmr2_tar"}
    try:
        center = np.asarray(person["center"], dtype=np.float64).reshape(-1)
        scale = np.asarray(person["scale"], dtype=np.float64).reshape(-1)
        has_pose = float(np.asarray(person.get("has_body_pose", 1)).reshape(-1)[0])
        pose = np.asarray(person.get("body_pose", []), dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        return reject_item(
            name, dataset, uri, f"person {k} of {key} in {uri} is malformed ({exc!r})", sid, meta
        )
    size = float(scale.max()) * BOX_UNIT if scale.size else float("nan")
    if not has_pose > 0:
        return reject_item(
            name,
            dataset,
            uri,
            f"no SMPL ground truth (has_body_pose=0) for {key} person {k} in {uri}",
            sid,
            meta,
        )
    if center.shape != (2,) or not np.isfinite(center).all() or not np.isfinite(size) or size <= 0:
        return reject_item(
            name,
            dataset,
            uri,
            f"bad box (center {center.tolist()}, size {size}) for {key} in {uri}",
            sid,
            meta,
        )
    if pose.shape != (POSE_DIM,):
        return reject_item(
            name,
            dataset,
            uri,
            f"body_pose of {key} in {uri} has {pose.size} values, expected {POSE_DIM}",
            sid,
            meta,
        )
    betas = shape_floats(person.get("betas"), person.get("has_betas"))
    meta.update(center=[float(c) for c in center], box_size=size)
    return row_item(
        name,
        sid,
        "image2pose",
        dataset,
        split,
        uri,
        image={**image, "crop": [float(center[0]), float(center[1]), size]},
        poses=[as_floats(pose)],
        betas=betas,
        meta=meta,
    )


def _sample(
    name: str, dataset: str, split: str, uri: str, shard: str, key: str, members: dict[str, bytes]
) -> Iterator[Item]:
    ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
    has_annotation = any(e in members for e in ANNOTATION_EXTENSIONS)
    sid = f"{dataset}:{shard}/{key}"
    if ext is None or not has_annotation:
        missing = "an image (.jpg/.png)" if ext is None else "its annotation (.data.pyd or .json)"
        found = ", ".join(sorted(members)) or "nothing"
        yield reject_item(name, dataset, uri, f"sample {key} in {uri} has no {missing} (found {found})", sid)
        return
    try:
        people = _annotations(members)
    except UnsafePickleError as exc:
        yield reject_item(name, dataset, uri, f"sample {key} in {uri}: data.pyd refused: {exc}", sid)
        return
    except Exception as exc:
        # A corrupt pickle or JSON raises many types; any of them is this sample's reject, named.
        yield reject_item(
            name,
            dataset,
            uri,
            f"sample {key} in {uri}: unreadable annotation ({type(exc).__name__}: {exc})",
            sid,
        )
        return
    if not people:
        yield reject_item(name, dataset, uri, f"sample {key} in {uri} annotates no person", sid)
        return
    image = {"uri": f"{uri}#{key}.{ext}", "data": members[ext]}
    for k, person in enumerate(people):
        yield _person(name, dataset, split, uri, shard, key, k, person, image)


def read(name: str, source: SourceConfig, ctx: ReadContext, part: dict | None = None) -> Iterator[Item]:
    """``image2pose`` items of every shard (or of the one shard of ``part``), sample by sample, in shard order."""
    files = [part["file"]] if part is not None else shard_files(source, ctx)
    if not [f for f in files if f]:
        where = ctx.path(source.path)
        yield reject_item(name, dataset_name(name, source), where, f"hmr2_tar: no *.tar shards at {where}")
        return
    for uri in files:
        yield from read_shard(name, source, ctx, uri)


def read_shard(name: str, source: SourceConfig, ctx: ReadContext, uri: str) -> Iterator[Item]:
    dataset = dataset_name(name, source)
    split = source.split or "train"
    shard = uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")
    fs, path = arrow_filesystem(uri, ctx.storage)
    try:
        stream = fs.open_input_stream(path)
    except (FileNotFoundError, OSError) as exc:
        yield reject_item(name, dataset, uri, f"tar shard {uri} cannot be opened ({exc})")
        return
    hashing = _HashingReader(stream)
    key: str | None = None
    members: dict[str, bytes] = {}
    last = "the start"
    try:
        with stream, tarfile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                if not info.isfile() or info.name.rsplit("/", 1)[-1].startswith("."):
                    continue
                member_key, ext = split_member(info.name)
                fobj = tar.extractfile(info)
                data = fobj.read() if fobj is not None else b""
                if len(data) != info.size:
                    raise tarfile.ReadError(f"member {info.name} holds {len(data)} of {info.size} bytes")
                if member_key != key:
                    if key is not None:
                        yield from _sample(name, dataset, split, uri, shard, key, members)
                    key, members = member_key, {}
                members[ext] = data
                last = info.name
            while hashing.read(1 << 20):  # tar padding after the last member: part of the digest
                pass
    except (tarfile.TarError, EOFError, OSError) as exc:
        if key is not None and members:
            yield from _sample(name, dataset, split, uri, shard, key, members)
        yield reject_item(
            name,
            dataset,
            uri,
            f"tar shard {uri} ends early or is corrupt after {last} ({type(exc).__name__}: {exc}); "
            "the samples before it were read",
        )
        return
    if key is not None:
        yield from _sample(name, dataset, split, uri, shard, key, members)
    ctx.digests[uri] = hashing.sha.hexdigest()
