"""``jobs/prepare.py``: exit codes and messages, MLflow logging, and a run through ``ray job submit``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.prepare import main
from posegpt.data.schema import QA_SCHEMA
from tests.conftest import free_port
from tests.pipelines.test_prepare import bad_world

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def bad_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"raw_root={root}",
        f"out={out}",
        "engine=local",
        "image_size=32",
        "sources.ps.reader=posescript",
        "sources.ps.path=posescript",
        "sources.ps.amass_root=amass",
        "sources.spin.reader=spin",
        "sources.spin.path=spin",
        "sources.spin.splits=[train]",
        "sources.llava.reader=llava",
        "sources.llava.path=llava/mix.json",
        *extra,
    ]


def test_too_many_rejects_exit_1_after_writing(tmp_path: Path, capsys) -> None:
    root = bad_world(tmp_path / "raw")
    out = tmp_path / "shards"
    code = main(bad_args(root, out, "max_reject_fraction=0.2", "tracking.enabled=false"))
    captured = capsys.readouterr()
    assert code == 1
    assert "more than max_reject_fraction=20.0%" in captured.err and str(out / "rejects") in captured.err
    assert "prepare: ps read=4 accepted=1 rejected=3; spin read=5" in captured.out
    assert (out / "manifest.json").is_file()


def test_missing_input_path_exits_1_naming_it(tmp_path: Path, capsys) -> None:
    root = bad_world(tmp_path / "raw")
    code = main(bad_args(root, tmp_path / "o", "sources.spin.path=absent", "tracking.enabled=false"))
    assert code == 1 and "absent" in capsys.readouterr().err
    code = main(bad_args(tmp_path / "no-such-root", tmp_path / "o2", "tracking.enabled=false"))
    assert code == 1 and "no-such-root" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    assert main([f"out={tmp_path}", "sources.x.reader=csv", "sources.x.path=a"]) == 2
    assert "sources.x.reader" in capsys.readouterr().err


def test_help_describes_the_job(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "max_reject_fraction" in capsys.readouterr().out


def test_run_is_logged_to_mlflow(tmp_path: Path) -> None:
    import mlflow

    root = bad_world(tmp_path / "raw")
    out = tmp_path / "shards"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        bad_args(
            root, out, "max_reject_fraction=0.9", f"tracking.tracking_uri={uri}", "tracking.experiment=prep"
        )
    )
    assert code == 0
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("prep").experiment_id])
    assert run.data.metrics["accepted"] == 5 and run.data.metrics["rejected"] == 6
    assert run.data.metrics["spin.read"] == 5 and run.data.params["seed"] == "0"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "rejects"} <= artifacts
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.tags[0].value == "preparing" and dataset.dataset.name == "shards"


def wait_dashboard(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the dashboard answers at all (Ray 2.60 answers 401 without its auth token: it is up)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the Ray dashboard at {url} did not answer within {timeout}s")


def cluster_env(temp: str) -> dict[str, str]:
    """The venv first on PATH, and token auth with this cluster's own token file (Ray 2.60 enables token
    auth whenever ``~/.ray/auth_token`` exists; the submitting client must then present it too)."""
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(Path(temp) / "auth_token"))
    return env


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """``ray start --head`` (2 CPUs) with the project's venv first on PATH; yields the dashboard URL and env."""
    import secrets

    temp = tempfile.mkdtemp(prefix="rayprep", dir="/tmp")
    (Path(temp) / "auth_token").write_text(secrets.token_hex(32))
    port, dash = free_port(), free_port()
    # Every port a head binds at a fixed default gets a free one: other clusters may run on this machine.
    ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
        )
    ]
    env = cluster_env(temp)
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "2",
            "--port",
            str(port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash),
            "--include-dashboard",
            "true",
            "--node-ip-address",
            "127.0.0.1",
            "--temp-dir",
            temp,
            "--disable-usage-stats",
            *ports,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_dashboard(url, proc)
        yield url, env
    finally:
        # Only the processes of this head (its own session), never a machine-wide `ray stop`.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_on_the_synthetic_world(
    ray_head: tuple[str, dict[str, str]], synthetic_world: Path, prepared_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    address, env = ray_head
    command = [
        str(VENV_BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        ".",
        "--",
        "python",
        "jobs/prepare.py",
        "--config",
        "configs/prepare/synthetic.yaml",
        f"raw_root={synthetic_world}",
        f"out={out}",
        "progress_bars=false",
    ]
    for _ in range(30):
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        # The dashboard answers before its job agent is up; nothing was submitted then, so retry.
        if "No available agent to submit job" not in proc.stdout + proc.stderr:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "prepare: posescript read=" in proc.stdout and "total read=" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    expected = json.loads((prepared_shards / "manifest.json").read_text())
    # The uploaded working dir has no .git, so only the code digest names the code version there.
    assert manifest.pop("code_version")["code_digest"] == expected.pop("code_version")["code_digest"]
    assert manifest == expected
    files = sorted(out.glob("*/*/part-*.parquet"))
    assert files and all(pq.read_schema(f).equals(QA_SCHEMA) for f in files)
    assert (out.parent / "mlflow.db").is_file()
