"""Same seed, same bytes; the CLI's presets and errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from jobs.synth import main
from pipelines.synthetic import SynthConfig, write_world
from posegpt.config import ConfigError, load_config

TINY = dict(
    poses=24, poses_per_sequence=3, frames_per_sequence=12, v1_poses=10, images=8, rpe_scenes=3, llava_rows=12
)


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = write_world(SynthConfig(seed=4, **TINY), tmp_path / "a")
    finally:
        torch.set_num_threads(threads)
    # The caller's torch thread count must not change a bit of the output.
    torch.set_num_threads(2)
    try:
        b = write_world(SynthConfig(seed=4, **TINY), tmp_path / "b")
    finally:
        torch.set_num_threads(threads)
    c = write_world(SynthConfig(seed=5, **TINY), tmp_path / "c")
    da, db, dc = digests(a.root), digests(b.root), digests(c.root)
    assert da == db
    assert any(name.endswith(".npz") for name in da) and any(name.endswith(".jpg") for name in da)
    changed = {name for name in da if dc.get(name) != da[name]}
    assert "posescript/posescript_auto_100k.json" in changed
    assert any(name.endswith(".jpg") for name in changed)


@pytest.mark.slow
def test_two_render_processes_write_the_same_bytes(tmp_path: Path) -> None:
    one = write_world(SynthConfig(seed=2, workers=1, **TINY), tmp_path / "one")
    two = write_world(SynthConfig(seed=2, workers=2, **TINY), tmp_path / "two")
    # world.json records the config, workers included; every data file must match.
    d1, d2 = digests(one.root), digests(two.root)
    d1.pop("world.json"), d2.pop("world.json")
    assert d1 == d2
    m1, m2 = one.manifest, two.manifest
    m1["config"].pop("workers"), m2["config"].pop("workers")
    assert m1 == m2


def test_presets_load_and_sizes_grow() -> None:
    presets = Path(__file__).resolve().parents[3] / "configs" / "synth"
    sizes = {
        name: load_config(SynthConfig, presets / f"{name}.yaml") for name in ("small", "medium", "large")
    }
    assert sizes["small"].poses < sizes["medium"].poses
    assert sizes["large"].images >= 10_000 and sizes["large"].poses == sizes["medium"].poses


def test_bad_configs_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        SynthConfig(val_fraction=0.6, test_fraction=0.5).validate()
    assert main(["--out", str(tmp_path / "x"), "size=huge"]) == 2
    assert "unknown size 'huge'" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "size=small", "imagez=5"]) == 2
    err = capsys.readouterr().err
    assert "'imagez'" in err and "did you mean 'images'" in err
    assert not (tmp_path / "x").exists()


def test_s3_output_is_uploaded(s3_endpoint: str, s3_bucket: str) -> None:
    from posegpt.storage import StorageConfig, s3_client, split_s3

    args = [f"{k}={v}" for k, v in TINY.items()] + [f"storage.endpoint_url={s3_endpoint}"]
    assert main(["--out", f"{s3_bucket}/world", "size=small", *args]) == 0
    bucket, _ = split_s3(s3_bucket)
    client = s3_client(StorageConfig(endpoint_url=s3_endpoint))
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="world/")["Contents"]}
    assert {"world/world.json", "world/posescript/posescript_auto_100k.json", "world/spin/train.npz"} <= keys
