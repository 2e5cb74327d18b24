"""README's local-cluster steps, replayed verbatim in bash against the head they start, token auth on.

The state is the one ``make demo`` leaves: an auth token in ``~/.ray/auth_token`` (Ray 2.60's
``ray.init()`` writes one) and the demo's MLflow store under ``outputs/demo``. HOME and RAY_TMPDIR
point into a temporary folder, so the real ``~/.ray`` and ``/tmp/ray`` are never touched; the
replay runs in a copy of the working tree. Only the processes that carry this test's marker in
their environment are stopped afterwards (``ray stop`` would stop every Ray process of the user).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Run the jobs on a cluster"
README_PORTS = (6379, 8265, 10001, 52365)
"""Ports a plain ``ray start --head`` takes: GCS, dashboard, Ray client, dashboard agent (whose job server
``ray job submit`` needs: with the port held by another Ray on the machine, no job can be submitted)."""


def readme_local_steps() -> str:
    """The first bash block of the README's cluster section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"README.md: no bash block under {SECTION!r}"
    return match.group(1)


def test_readme_steps_turn_token_auth_on_for_the_client_and_leave_it_on() -> None:
    steps = readme_local_steps()
    lines = [line.split("#", 1)[0].strip() for line in steps.splitlines()]
    assert "export RAY_AUTH_MODE=token" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("ray start --head"))
    assert lines.index("export RAY_AUTH_MODE=token") < start
    assert "disabled" not in steps, "the README must not tell users to turn authentication off"
    assert "ray stop" not in steps, "ray stop ends every Ray process of the user, not only this head"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _marked_pids(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _stop_marked(marker: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _marked_pids(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _marked_pids(marker):
            time.sleep(0.5)


def _demo_store(repo_copy: Path) -> str:
    """A small stand-in for the demo's MLflow store: a training run and its evaluation."""
    script = """
import sys, mlflow
from posegpt import tracking
from posegpt.tracking import TrackingConfig
out = sys.argv[1]
tracking.configure(TrackingConfig(tracking_uri=f"sqlite:///{out}/mlflow.db", experiment="posegpt"), out)
with mlflow.start_run(run_name="readme-train", tags={tracking.JOB_TAG: "train"}) as run:
    mlflow.log_params({"optimizer.lr": 3e-4})
    mlflow.log_metric("train/loss", 1.5, step=10)
with mlflow.start_run(run_name="readme-eval", parent_run_id=run.info.run_id, tags={tracking.JOB_TAG: "evaluate"}):
    mlflow.log_metric("text2pose/pa_mpjpe", 128.5)
"""
    out = repo_copy / "outputs" / "demo"
    out.mkdir(parents=True)
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", script, str(out)],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    return "readme-train"


@pytest.mark.slow
def test_readme_local_cluster_steps_run_verbatim_with_token_auth(tmp_path: Path) -> None:
    busy = [p for p in README_PORTS if not _port_free(p)]
    if busy:
        pytest.skip(f"ports {busy} are taken: the README's plain `ray start --head` needs them free")
    # Short paths: Ray's Unix sockets live under RAY_TMPDIR and must stay under ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="rdm", dir="/tmp"))
    marker = f"POSEGPT_README_TEST={uuid.uuid4().hex}"
    try:
        home = root / "home"
        (home / ".ray").mkdir(parents=True)
        token = uuid.uuid4().hex + uuid.uuid4().hex
        (home / ".ray" / "auth_token").write_text(token)
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split("\0")
        repo_copy = root / "repo"
        for name in filter(None, files):
            src = REPO / name
            if src.is_file():
                (repo_copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, repo_copy / name)
        (repo_copy / ".venv").symlink_to(REPO / ".venv")
        run_name = _demo_store(repo_copy)

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "VIRTUAL_ENV")) and k != "RAY_TMPDIR"
        }
        key, value = marker.split("=", 1)
        env.update(HOME=str(home), RAY_TMPDIR=str(root / "ray"), **{key: value})
        (root / "ray").mkdir()
        steps = readme_local_steps()
        result = subprocess.run(
            ["bash", "-e", "-c", steps], cwd=repo_copy, env=env, capture_output=True, text=True, timeout=420
        )
        # On a loaded machine the dashboard can answer before the head's job agent is up (Ray waits
        # 10 s for it); nothing was submitted then, so the steps after `ray start` run again.
        again = "\n".join(line for line in steps.splitlines() if not line.startswith("ray start"))
        for _ in range(10):
            if "No available agent to submit job" not in result.stdout + result.stderr:
                break
            time.sleep(3)
            result = subprocess.run(
                ["bash", "-e", "-c", again],
                cwd=repo_copy,
                env=env,
                capture_output=True,
                text=True,
                timeout=420,
            )
        log = result.stdout[-4000:] + result.stderr[-4000:]
        assert result.returncode == 0, log
        assert "succeeded" in result.stdout, log
        assert "runs of experiment 'posegpt'" in result.stdout and run_name in result.stdout, log
        # The head really checks tokens: a request without one is refused.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen("http://127.0.0.1:8265/api/jobs/", timeout=10)
        assert refused.value.code == 401
        assert (home / ".ray" / "auth_token").read_text() == token, "the demo's token was replaced"
    finally:
        _stop_marked(marker)
        shutil.rmtree(root, ignore_errors=True)
