"""Local paths and ``s3://`` URIs behind one small API.

Datasets go through pyarrow's S3 filesystem (what Ray Data reads with); single files
and checkpoint folders go through boto3. Both take the endpoint from ``StorageConfig``,
so an S3-compatible store (MinIO, Ceph, moto in tests) works the same as AWS.
Credentials follow boto3's usual chain (environment, shared file, instance profile):
they never sit in a config file.

Each process builds one pyarrow filesystem and one boto3 client per storage setting and
reuses them (a Ray worker reading thousands of objects pays the connection set-up once).
Both retry throttling, 5xx and connection errors (pyarrow: the AWS SDK's default
exponential backoff; boto3: adaptive mode, which also paces the client) up to ``max_attempts`` times, and folder transfers run ``max_concurrency``
objects at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


@dataclass
class StorageConfig:
    """Where ``s3://`` URIs point."""

    endpoint_url: str | None = None
    """S3 endpoint for S3-compatible stores (e.g. ``http://127.0.0.1:9000``); empty for AWS."""
    region: str = "us-east-1"
    """S3 region."""
    connect_timeout_s: float = 5.0
    """Seconds to wait for the S3 endpoint before failing with a clear error."""
    max_attempts: int = 8
    """Tries per S3 request (throttling, 5xx and connection errors are retried with backoff); at least 5."""
    max_concurrency: int = 8
    """Objects transferred at a time by folder uploads and downloads (and parts of one large object)."""


def is_s3(uri: str | os.PathLike[str]) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/path`` → ``("bucket", "key/path")``."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri}")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"s3 URI {uri!r} names no bucket")
    return bucket, key.strip("/")


def join(base: str, *parts: str) -> str:
    """Join path parts for both local paths and URIs."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


@lru_cache(maxsize=16)
def _s3_filesystem(
    endpoint_url: str | None, region: str, connect_timeout_s: float, max_attempts: int, max_concurrency: int
) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        "region": region,
        "connect_timeout": connect_timeout_s,
        # The SDK's "default" strategy (exponential backoff from 25 ms) has no retry quota; the "standard"
        # one stops retrying for the whole process once ~100 retries drained its quota, which a job of
        # thousands of requests against a throttling store reaches (measured with moto behind a proxy).
        "retry_strategy": pafs.AwsDefaultS3RetryStrategy(max_attempts=max_attempts),
    }
    if endpoint_url:
        scheme, _, host = endpoint_url.partition("://")
        kwargs["endpoint_override"] = host or scheme
        kwargs["scheme"] = scheme if host else "https"
    return pafs.S3FileSystem(**kwargs)


def arrow_filesystem(uri: str, cfg: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem (one per storage setting and process) and the path inside it."""
    cfg = cfg or StorageConfig()
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return _s3_filesystem(*astuple(cfg)), f"{bucket}/{key}".rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


@lru_cache(maxsize=16)
def _s3_client(
    endpoint_url: str | None, region: str, connect_timeout_s: float, max_attempts: int, max_concurrency: int
) -> Any:
    import boto3
    from botocore.config import Config

    # A session of its own: boto3's default session is not thread-safe, and transfers run in threads.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region,
        config=Config(
            connect_timeout=connect_timeout_s,
            retries={"total_max_attempts": max_attempts, "mode": "adaptive"},
            max_pool_connections=max(10, max_concurrency),
        ),
    )


def s3_client(cfg: StorageConfig | None = None) -> Any:
    """The process's boto3 S3 client for ``cfg`` (adaptive retries, ``cfg.max_attempts`` tries)."""
    return _s3_client(*astuple(cfg or StorageConfig()))


def _transfer_config(cfg: StorageConfig) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(max_concurrency=cfg.max_concurrency)


def exists(uri: str, cfg: StorageConfig | None = None) -> bool:
    fs, path = arrow_filesystem(uri, cfg)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_object(fs: pafs.FileSystem, path: str, uri: str, attempts: int) -> bytes:
    """The bytes at ``path`` of ``fs``, with ``attempts`` tries of the whole read on S3.

    pyarrow retries a throttled request inside the SDK, except a GetObject whose error body is
    longer than the byte range asked for (a small object): the SDK then fails with
    "Failed to flush response stream", which is not retried (seen against a store answering
    503 SlowDown). Those reads are tried again here. FileNotFoundError is never retried.
    """
    last: OSError | None = None
    for attempt in range(max(1, attempts) if isinstance(fs, pafs.S3FileSystem) else 1):
        try:
            with fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            text = str(exc)
            if "NoSuchKey" in text or "not found" in text.lower():
                raise FileNotFoundError(f"{uri} does not exist") from exc
            last = exc
            time.sleep(min(2.0, 0.05 * 2**attempt))
    assert last is not None
    raise last


def read_bytes(uri: str, cfg: StorageConfig | None = None) -> bytes:
    cfg = cfg or StorageConfig()
    fs, path = arrow_filesystem(uri, cfg)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri} does not exist")
    return read_object(fs, path, uri, cfg.max_attempts)


def write_bytes(uri: str, data: bytes, cfg: StorageConfig | None = None) -> None:
    fs, path = arrow_filesystem(uri, cfg)
    if not is_s3(uri):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def check_reachable(uri: str, cfg: StorageConfig | None = None) -> None:
    """Fail fast, with the endpoint in the message, when an S3 store does not answer."""
    if not is_s3(uri):
        return
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = split_s3(uri)
    # Three tries, not max_attempts: this check exists to fail fast on a wrong endpoint, yet a store
    # that throttles the first tries of a request must still pass.
    probe = replace(cfg or StorageConfig(), max_attempts=3)
    try:
        s3_client(probe).head_bucket(Bucket=bucket)
    except ClientError as exc:
        raise ValueError(f"S3 bucket {bucket!r} of {uri} is not accessible: {exc}") from exc
    except BotoCoreError as exc:
        endpoint = (cfg or StorageConfig()).endpoint_url or "AWS S3"
        raise ValueError(f"S3 endpoint {endpoint} does not answer for {uri}: {exc}") from exc


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_dir(uri: str, local_dir: str | Path, cfg: StorageConfig | None = None) -> Path:
    """Mirror the objects under an ``s3://`` prefix into ``local_dir``.

    Files already there with the same size and ETag (recorded in ``.s3-etags.json``)
    are skipped, so a second load of a 13B checkpoint costs only a listing.
    """
    local = Path(local_dir)
    local.mkdir(parents=True, exist_ok=True)
    bucket, prefix = split_s3(uri)
    client = s3_client(cfg)
    etag_file = local / ".s3-etags.json"
    known: dict[str, str] = json.loads(etag_file.read_text()) if etag_file.exists() else {}
    cfg = cfg or StorageConfig()
    transfer = _transfer_config(cfg)
    paginator = client.get_paginator("list_objects_v2")
    found = 0
    todo: list[tuple[str, Path, str, str]] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/" if prefix else ""):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            rel = key[len(prefix) :].lstrip("/") if prefix else key
            if not rel or rel.endswith("/"):
                continue
            found += 1
            target = local / rel
            etag = obj["ETag"].strip('"')
            if target.exists() and target.stat().st_size == obj["Size"] and known.get(rel) == etag:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            todo.append((key, target, rel, etag))
    if found == 0:
        raise FileNotFoundError(f"no objects under {uri}")

    def fetch(job: tuple[str, Path, str, str]) -> None:
        key, target, _, _ = job
        client.download_file(bucket, key, str(target), Config=transfer)

    with ThreadPoolExecutor(max_workers=cfg.max_concurrency) as pool:
        list(pool.map(fetch, todo))
    known.update({rel: etag for _, _, rel, etag in todo})
    etag_file.write_text(json.dumps(known, indent=1, sort_keys=True))
    return local


def upload_dir(local_dir: str | Path, uri: str, cfg: StorageConfig | None = None) -> None:
    """Copy every file under ``local_dir`` to the ``s3://`` prefix (or a local folder)."""
    local = Path(local_dir)
    if not local.is_dir():
        raise FileNotFoundError(f"{local} is not a folder")
    if not is_s3(uri):
        import shutil

        shutil.copytree(local, uri, dirs_exist_ok=True)
        return
    bucket, prefix = split_s3(uri)
    cfg = cfg or StorageConfig()
    client = s3_client(cfg)
    transfer = _transfer_config(cfg)
    files = [p for p in sorted(local.rglob("*")) if p.is_file()]

    def send(path: Path) -> None:
        key = "/".join(p for p in (prefix, path.relative_to(local).as_posix()) if p)
        client.upload_file(str(path), bucket, key, Config=transfer)

    with ThreadPoolExecutor(max_workers=cfg.max_concurrency) as pool:
        list(pool.map(send, files))


def materialize_dir(uri: str, cache_dir: str | Path, cfg: StorageConfig | None = None) -> Path:
    """A local folder holding ``uri``: the path itself, or an S3 prefix mirrored into the cache."""
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{uri} does not exist")
        return path
    digest = hashlib.sha1(uri.encode()).hexdigest()[:16]
    bucket, key = split_s3(uri)
    name = (key.rstrip("/").rsplit("/", 1)[-1] or bucket) + "-" + digest
    return download_dir(uri, Path(cache_dir) / "s3" / name, cfg)
