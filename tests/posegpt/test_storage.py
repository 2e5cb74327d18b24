"""Storage: one API for local paths and s3:// URIs (moto_server as the S3 endpoint)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from posegpt.storage import (
    StorageConfig,
    arrow_filesystem,
    check_reachable,
    download_dir,
    exists,
    is_s3,
    join,
    materialize_dir,
    read_bytes,
    s3_client,
    split_s3,
    upload_dir,
    write_bytes,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_uri_helpers() -> None:
    assert is_s3("s3://b/k") and not is_s3("/tmp/x")
    assert split_s3("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="names no bucket"):
        split_s3("s3:///key")
    with pytest.raises(ValueError, match="not an s3:// URI"):
        split_s3("/local/path")
    assert join("s3://b/prefix/", "/x/", "y") == "s3://b/prefix/x/y"
    assert join("/data", "x", "y") == "/data/x/y"


def test_local_bytes_and_folders(tmp_path: Path) -> None:
    uri = str(tmp_path / "deep" / "file.bin")
    assert not exists(uri)
    write_bytes(uri, b"abc")
    assert exists(uri) and read_bytes(uri) == b"abc"
    with pytest.raises(FileNotFoundError, match=r"nothing\.bin"):
        read_bytes(str(tmp_path / "nothing.bin"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    upload_dir(src, str(tmp_path / "copy"))
    assert _tree(tmp_path / "copy") == _tree(src)
    assert materialize_dir(str(src), tmp_path / "cache") == src
    with pytest.raises(FileNotFoundError, match="missing"):
        materialize_dir(str(tmp_path / "missing"), tmp_path / "cache")
    fs, path = arrow_filesystem(str(src))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(src.resolve())
    check_reachable(str(src))  # local paths need no endpoint


def test_s3_bytes(s3_endpoint: str, s3_bucket: str) -> None:
    cfg = StorageConfig(endpoint_url=s3_endpoint)
    uri = join(s3_bucket, "dir", "hello.txt")
    assert not exists(uri, cfg)
    write_bytes(uri, b"hello", cfg)
    assert exists(uri, cfg) and read_bytes(uri, cfg) == b"hello"
    bucket, key = split_s3(uri)
    assert s3_client(cfg).get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello"
    with pytest.raises(FileNotFoundError, match=r"absent\.txt"):
        read_bytes(join(s3_bucket, "absent.txt"), cfg)
    check_reachable(uri, cfg)


def test_s3_upload_and_download_skip_unchanged(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    cfg = StorageConfig(endpoint_url=s3_endpoint)
    src = tmp_path / "ckpt"
    (src / "adapter").mkdir(parents=True)
    (src / "config.yaml").write_text("base: tiny\n")
    (src / "adapter" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    prefix = join(s3_bucket, "runs", "r1")
    upload_dir(src, prefix, cfg)
    bucket, _ = split_s3(prefix)
    keys = sorted(o["Key"] for o in s3_client(cfg).list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["runs/r1/adapter/weights.bin", "runs/r1/config.yaml"]

    local = download_dir(prefix, tmp_path / "mirror", cfg)
    files = _tree(local)
    files.pop(".s3-etags.json")
    assert files == _tree(src)
    etags = json.loads((local / ".s3-etags.json").read_text())
    assert set(etags) == {"adapter/weights.bin", "config.yaml"}

    # Unchanged objects are not downloaded again; a changed one is.
    weights = local / "adapter" / "weights.bin"
    before = weights.stat().st_mtime_ns
    time.sleep(0.01)
    write_bytes(join(prefix, "config.yaml"), b"base: other\n", cfg)
    download_dir(prefix, local, cfg)
    assert weights.stat().st_mtime_ns == before
    assert (local / "config.yaml").read_bytes() == b"base: other\n"
    # A local file edited behind the mirror's back (size differs) is fetched again.
    weights.write_bytes(b"corrupt")
    download_dir(prefix, local, cfg)
    assert weights.read_bytes() == (src / "adapter" / "weights.bin").read_bytes()

    cached = materialize_dir(prefix, tmp_path / "cache", cfg)
    assert cached.is_relative_to(tmp_path / "cache") and (cached / "config.yaml").exists()
    with pytest.raises(FileNotFoundError, match="no objects under"):
        download_dir(join(s3_bucket, "nothing-here"), tmp_path / "empty", cfg)


def test_s3_through_pyarrow(s3_endpoint: str, s3_bucket: str) -> None:
    cfg = StorageConfig(endpoint_url=s3_endpoint)
    fs, path = arrow_filesystem(join(s3_bucket, "t.txt"), cfg)
    assert isinstance(fs, pafs.S3FileSystem) and path == f"{split_s3(s3_bucket)[0]}/t.txt"
    with fs.open_output_stream(path) as f:
        f.write(b"arrow")
    assert read_bytes(join(s3_bucket, "t.txt"), cfg) == b"arrow"


def test_check_reachable_errors(s3_endpoint: str) -> None:
    refused = StorageConfig(endpoint_url="http://127.0.0.1:1", connect_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"http://127\.0\.0\.1:1 does not answer for s3://bucket/x"):
        check_reachable("s3://bucket/x", refused)
    assert time.monotonic() - start < 15
    with pytest.raises(
        ValueError, match=r"bucket 'no-such-bucket' of s3://no-such-bucket/x is not accessible"
    ):
        check_reachable("s3://no-such-bucket/x", StorageConfig(endpoint_url=s3_endpoint))


def test_one_cached_filesystem_and_client_per_setting_with_retries(s3_endpoint: str) -> None:
    cfg = StorageConfig(endpoint_url=s3_endpoint)
    fs_a, path_a = arrow_filesystem("s3://bucket-a/x", cfg)
    fs_b, path_b = arrow_filesystem("s3://bucket-b/y/z", StorageConfig(endpoint_url=s3_endpoint))
    assert fs_a is fs_b and (path_a, path_b) == ("bucket-a/x", "bucket-b/y/z")
    assert (
        arrow_filesystem("s3://bucket-a/x", StorageConfig(endpoint_url=s3_endpoint, max_attempts=6))[0]
        is not fs_a
    )
    client = s3_client(cfg)
    assert client is s3_client(StorageConfig(endpoint_url=s3_endpoint))
    retries = client.meta.config.retries
    assert retries["mode"] == "adaptive" and retries["total_max_attempts"] == cfg.max_attempts >= 5
