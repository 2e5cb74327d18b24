"""The prepare job under faults: tar shards end to end, a killed run, a killed worker, an S3 store that refuses."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.prepare import prepare
from pipelines.prepare_config import PrepareConfig
from pipelines.writer import MANIFEST_FILE
from posegpt.config import load_config
from posegpt.data.crops import crop_box, encode_jpeg
from tests.pipelines.sources.raw_files import hmr2_person, hmr2_tar, jpeg_bytes, spin_npz
from tests.pipelines.test_prepare import bad_world, read_dir


def tar_world(root: Path) -> Path:
    """Two shards: 3 good persons, one without ground truth, one sample without annotation, one cut short."""
    pose = np.random.default_rng(3).normal(0, 0.2, (6, 72))
    hmr2_tar(
        root / "tars" / "000000.tar",
        [
            ("a", {"jpg": jpeg_bytes(1), "data.pyd": [hmr2_person([40, 30], [0.3, 0.3], pose[0])]}),
            (
                "b",
                {
                    "jpg": jpeg_bytes(2),
                    "data.pyd": [
                        hmr2_person([30, 40], [0.2, 0.4], pose[1]),
                        hmr2_person([20, 20], [0.1, 0.1], pose[2], has_pose=0.0),
                    ],
                },
            ),
            ("c", {"jpg": jpeg_bytes(3)}),
        ],
    )
    cut = hmr2_tar(
        root / "tars" / "000001.tar",
        [
            ("d", {"jpg": jpeg_bytes(4), "data.pyd": [hmr2_person([50, 40], [0.25, 0.3], pose[3])]}),
            ("e", {"jpg": jpeg_bytes(5), "data.pyd": [hmr2_person([50, 40], [0.25, 0.3], pose[4])]}),
        ],
    )
    data = cut.read_bytes()
    cut.write_bytes(data[: data.index(jpeg_bytes(5)) + 50])
    return root


def tar_config(root: Path, out: str, *extra: str) -> PrepareConfig:
    return load_config(
        PrepareConfig,
        None,
        [
            f"raw_root={root}",
            f"out={out}",
            "engine=local",
            "image_size=32",
            "tracking.enabled=false",
            "sources.coco.reader=hmr2_tar",
            "sources.coco.path=tars",
            "sources.coco.dataset=coco",
            *extra,
        ],
    )


def test_hmr2_tar_shards_end_to_end(tmp_path: Path) -> None:
    root = tar_world(tmp_path / "raw")
    out = tmp_path / "shards"
    result = prepare(tar_config(root, str(out)))
    rows = read_dir(out / "image2pose" / "train")
    rejects = read_dir(out / "rejects")
    assert [r["sample_id"] for r in rows] == ["coco:000000/a:0", "coco:000000/b:0", "coco:000001/d:0"]
    reasons = sorted(r["reason"] for r in rejects)
    assert len(reasons) == 3
    assert any("has_body_pose=0" in r and "b person 1" in r for r in reasons)
    assert any("sample c" in r and "annotation" in r for r in reasons)
    assert any("ends early" in r and "tars/000001.tar" in r for r in reasons)
    assert not [r for r in reasons if str(root) in r]
    assert result.per_input == {"coco": {"read": 6, "accepted": 3, "rejected": 3}}
    # The crop is crop_box of the shard's own image: centre, box side max(scale) * 200.
    pixels = np.asarray(Image.open(__import__("io").BytesIO(jpeg_bytes(2))).convert("RGB"))
    assert rows[1]["image"] == encode_jpeg(crop_box(pixels, (30, 40), 80.0, 1.0, 32), 90)
    files = result.manifest["sources"]["coco"]["files"]
    assert set(files) == {"tars/000000.tar"}  # a shard that ends early has no digest of a whole file
    assert result.manifest["sources"]["coco"]["parts"] == 2


def test_a_run_killed_before_its_manifest_is_replaced_by_a_clean_one(tmp_path: Path) -> None:
    root = bad_world(tmp_path / "raw")
    from tests.pipelines.test_prepare import bad_config

    fresh, out = tmp_path / "fresh", tmp_path / "out"
    prepare(bad_config(root, str(fresh)))
    prepare(bad_config(root, str(out)))
    # What a killed job leaves: its start marker and some files, no manifest, plus a file of an older layout.
    (out / MANIFEST_FILE).unlink()
    stray = out / "image2pose" / "train" / "part-00099-00000000.parquet"
    stray.write_bytes(b"half a file")
    prepare(bad_config(root, str(out)))  # no overwrite needed: the folder holds an unfinished run
    assert not stray.exists()
    names = sorted(p.relative_to(fresh) for p in fresh.rglob("*.parquet"))
    assert names == sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    assert (out / MANIFEST_FILE).read_text() == (fresh / MANIFEST_FILE).read_text()


def big_image_world(root: Path, rows: int, parts: int) -> Path:
    """``parts`` npz files of ``rows`` rows over 640x480 images (slow enough to kill a task mid-part)."""
    for i in range(4):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(root / "img" / f"{i}.jpg")
    pose = np.random.default_rng(0).normal(0, 0.2, (rows, 72))
    for p in range(parts):
        names = [f"{(p + k) % 4}.jpg" for k in range(rows)]
        spin_npz(root / "spin" / f"f{p}" / "train.npz", names, [[320, 240]] * rows, [1.5] * rows, pose)
    return root


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_retried_and_counts_add_up(ray_local, tmp_path: Path) -> None:
    import psutil

    root = tmp_path / "raw"
    (root / "img").mkdir(parents=True)
    big_image_world(root, rows=60, parts=6)
    sources = []
    for p in range(6):
        sources += [
            f"sources.s{p}.reader=spin",
            f"sources.s{p}.path=spin/f{p}",
            f"sources.s{p}.image_root=img",
            f"sources.s{p}.splits=[train]",
        ]
    common = [f"raw_root={root}", "image_size=224", "tracking.enabled=false", "progress_bars=false", *sources]
    expected = prepare(
        load_config(PrepareConfig, None, [*common, f"out={tmp_path / 'local'}", "engine=local"])
    )

    killed: list[int] = []

    def kill_one_task() -> None:
        # Only this test's own Ray (children of this process); a worker running a prepare part.
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for proc in psutil.Process().children(recursive=True):
                try:
                    title = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "ray::ReadPrepareParts" in title:
                    time.sleep(0.3)  # inside the part, after it has written some rows
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_task)
    killer.start()
    out = tmp_path / "ray"
    result = prepare(load_config(PrepareConfig, None, [*common, f"out={out}", "engine=ray"]))
    killer.join()
    assert killed, "no prepare task was seen running"
    assert result.per_input == expected.per_input and result.read == result.accepted + result.rejected
    assert result.manifest["counts"] == expected.manifest["counts"]
    rows = read_dir(out / "image2pose" / "train")
    ids = [r["sample_id"] for r in rows]
    assert len(ids) == len(set(ids)) == result.accepted == 360
    assert sorted(ids) == sorted(
        r["sample_id"] for r in read_dir(tmp_path / "local" / "image2pose" / "train")
    )
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]


class RefusingProxy:
    """An HTTP proxy on 127.0.0.1 in front of moto that answers 503 SlowDown to the first ``refuse`` tries of
    every distinct request (method + path + query), then forwards; counts what it refused."""

    def __init__(self, upstream: str, refuse: int = 2) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.refused: Counter[str] = Counter()
        self.forwarded = 0
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def read_body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    length = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(length) if length else b""
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()

            def handle_one(self) -> None:
                body = self.read_body()
                key = f"{self.command} {self.path}"
                with lock:
                    refuse_now = proxy.refused[key] < refuse
                    if refuse_now:
                        proxy.refused[key] += 1
                    else:
                        proxy.forwarded += 1
                head = self.command == "HEAD"
                if refuse_now:
                    payload = (
                        b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", "0" if head else str(len(payload)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = b"" if head else resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    # A HEAD answer keeps the object's own Content-Length (it has no body to measure).
                    if k.lower() in ("transfer-encoding", "connection") or (
                        k.lower() == "content-length" and not head
                    ):
                        continue
                    self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RefusingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def refusing_s3(s3_endpoint: str) -> Iterator[RefusingProxy]:
    with RefusingProxy(s3_endpoint) as proxy:
        yield proxy


@pytest.mark.slow
def test_s3_refusing_the_first_two_tries_of_every_request(
    refusing_s3: RefusingProxy, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    from posegpt.storage import StorageConfig, upload_dir
    from tests.pipelines.test_prepare import bad_config

    root = bad_world(tmp_path / "raw")
    upload_dir(root, f"{s3_bucket}/raw", StorageConfig(endpoint_url=s3_endpoint))
    cfg = bad_config(
        root, f"{s3_bucket}/shards", f"raw_root={s3_bucket}/raw", f"storage.endpoint_url={refusing_s3.url}"
    )
    result = prepare(cfg)
    local = prepare(bad_config(root, str(tmp_path / "local")))
    assert result.per_input == local.per_input and result.manifest["counts"] == local.manifest["counts"]
    # Every request was refused twice before it went through (reads, listings and writes alike).
    assert refusing_s3.forwarded > 20 and set(refusing_s3.refused.values()) == {2}
    assert any(k.startswith("PUT") for k in refusing_s3.refused) and any(
        k.startswith("GET") for k in refusing_s3.refused
    )
    manifest = json.loads(
        __import__("posegpt.storage", fromlist=["read_bytes"]).read_bytes(
            f"{s3_bucket}/shards/manifest.json", StorageConfig(endpoint_url=s3_endpoint)
        )
    )
    assert manifest["counts"] == local.manifest["counts"]


def test_real_preset_names_release_files_and_a_shard_pattern_is_checked_by_its_folder(tmp_path: Path) -> None:
    from pipelines.prepare import missing_inputs
    from pipelines.sources import READERS

    real = load_config(PrepareConfig, Path(__file__).resolve().parents[2] / "configs/prepare/real.yaml", [])
    assert {s.reader for s in real.sources.values()} <= set(READERS)
    tars = {n: s.path for n, s in real.sources.items() if s.reader == "hmr2_tar"}
    # 4D-Humans' datasets_tar.yaml names these shard sets.
    assert tars == {
        "h36m_train": "hmr2_training_data/dataset_tars/h36m-train/{000000..000312}.tar",
        "mpii_train": "hmr2_training_data/dataset_tars/mpii-train/{000000..000009}.tar",
        "coco_train": "hmr2_training_data/dataset_tars/coco-train-2014-pruned/{000000..000017}.tar",
    }
    assert real.sources["mpi_inf_3dhp_train"].path == "spin/dataset_extras/mpi_inf_3dhp_train.npz"
    assert real.sources["posescript_v1"].layout == "v1" and real.sources["posescript_v1"].enabled
    root = tar_world(tmp_path / "raw")
    cfg = tar_config(root, str(tmp_path / "o"), "sources.coco.path=tars/{000000..000003}.tar")
    assert missing_inputs(cfg) == []
    result = prepare(cfg)
    # Shards 2 and 3 of the pattern are not there: each is one reject naming it, the rest is read.
    missing = [r["reason"] for r in read_dir(tmp_path / "o" / "rejects") if "cannot be opened" in r["reason"]]
    assert len(missing) == 2 and result.accepted == 3
    cfg = tar_config(root, str(tmp_path / "o2"), "sources.coco.path=nothing/{000000..000003}.tar")
    assert missing_inputs(cfg) == [f"sources.coco.path = {root}/nothing/{{000000..000003}}.tar"]
