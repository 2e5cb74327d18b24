"""``jobs/train.py``: exit codes and messages for bad input (the full run is the session's tiny run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.train import main

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")


def test_unknown_key_exits_2_naming_it(capsys):
    assert main(["--config", TINY, "schedule.max_step=10"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key schedule.'max_step'" in err and "did you mean 'max_steps'" in err


def test_missing_preset_exits_2(capsys, tmp_path):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_missing_shard_folder_exits_1_before_training(capsys, tmp_path):
    code = main(
        [
            "--config",
            TINY,
            f"data.shard_root={tmp_path / 'no-shards'}",
            f"storage_path={tmp_path / 'runs'}",
            "tracking.enabled=false",
        ]
    )
    assert code == 1
    assert f"shard folder {tmp_path / 'no-shards'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_config_is_required():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
