"""The cluster manifests parse, name entry points that exist and answer --help, and agree on versions."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
PINS = {
    re.split(r"[\[=]", dep)[0].lower(): dep.split("==")[1]
    for dep in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"]
    if "==" in dep
}
IMAGE = "ghcr.io/posegpt-ray/posegpt-ray"
MLFLOW_IMAGE = "ghcr.io/posegpt-ray/posegpt-mlflow"
DOCKERFILES = (INFRA / "docker" / "Dockerfile", INFRA / "mlflow" / "Dockerfile")


def manifest_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(INFRA.rglob("*.yaml")):
        if path.name.startswith(".hadolint"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def walk(node: object) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((str(k), v))
            out.extend(walk(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(walk(v))
    return out


def test_every_manifest_parses_and_has_a_kind_or_is_a_launcher_config() -> None:
    docs = manifest_docs()
    kinds = {doc.get("kind") for _, doc in docs}
    assert {"RayCluster", "RayJob", "RayService", "ConfigMap", "Deployment", "Service"} <= kinds
    for path, doc in docs:
        assert "kind" in doc or "cluster_name" in doc, (
            f"{path} is neither a k8s manifest nor a launcher config"
        )


def test_every_image_tag_agrees_with_the_project_version() -> None:
    images = [(p, v) for p, d in manifest_docs() for k, v in walk(d) if k == "image"]
    assert images, "no image fields found"
    for path, image in images:
        expected = MLFLOW_IMAGE if path.parent.name == "mlflow" else IMAGE
        assert image == f"{expected}:{VERSION}", f"{path}: image {image} does not match version {VERSION}"
    for dockerfile in DOCKERFILES:
        assert f"ARG POSEGPT_VERSION={VERSION}" in dockerfile.read_text(), dockerfile


def test_ray_version_of_the_clusters_is_the_pinned_one() -> None:
    versions = [v for _, d in manifest_docs() for k, v in walk(d) if k == "rayVersion"]
    assert versions and set(versions) == {PINS["ray"]}


def test_dockerfile_installs_the_pinned_versions() -> None:
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    # Everything goes through the lock file, and the lock agrees with every pin of pyproject.toml.
    assert "pip install -c requirements.lock -e ." in dockerfile
    assert re.findall(r"\b[\w\-]+==[0-9][\w.]*", dockerfile) == [], (
        "a version is hard-coded in the Dockerfile"
    )
    lock = {
        line.split("==")[0].lower().replace("_", "-"): line.strip().split("==")[1]
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    for name, version in PINS.items():
        assert lock.get(name) == version, (
            f"requirements.lock has {name}=={lock.get(name)}, pyproject pins {version}"
        )
    python = re.search(r"ARG PYTHON_VERSION=(\S+)", dockerfile)
    assert python and PYPROJECT["project"]["requires-python"] == f">={python.group(1)},<3.12"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    exe = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(exe), "-c", str(INFRA / "docker" / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mlflow_image_has_the_pinned_mlflow_and_a_postgresql_driver() -> None:
    dockerfile = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert (
        "grep -i '^mlflow==' requirements.lock" in dockerfile and '"mlflow==${MLFLOW_VERSION}"' in dockerfile
    )
    assert re.search(r"ARG PSYCOPG2_VERSION=2\.9\.\d+", dockerfile) and "psycopg2-binary==" in dockerfile
    assert "import mlflow, boto3, psycopg2" in dockerfile, "the build checks that the drivers import"


def test_mlflow_server_allows_the_host_names_the_jobs_use() -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    deployment = next(
        d for p, d in manifest_docs() if p.parent.name == "mlflow" and d.get("kind") == "Deployment"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert '--allowed-hosts "$MLFLOW_ALLOWED_HOSTS"' in container["args"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    allowed = [h.strip() for h in env["MLFLOW_ALLOWED_HOSTS"].split(",")]
    settings = next(d for _, d in manifest_docs() if d.get("kind") == "ConfigMap")["data"]
    netloc = settings["MLFLOW_TRACKING_URI"].split("://", 1)[1].rstrip("/")
    # MLflow 3.17's own matcher, on the Host header a job sends (name:port) and a port-forward's.
    for host in (netloc, netloc.split(":")[0], "127.0.0.1:5000", "localhost:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")


def test_aws_cluster_config_matches_rays_schema() -> None:
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["available_node_types"]["a100"]["node_config"]["InstanceType"].startswith("p4d")
    assert "IamInstanceProfile" in config["available_node_types"]["a100"]["node_config"]


def test_aws_nodes_name_their_ami_and_the_head_may_launch_workers() -> None:
    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    nodes = config["available_node_types"]
    for name, node in nodes.items():
        image = node["node_config"].get("ImageId", "")
        # Without ImageId Ray picks its default Deep Learning AMI (Ubuntu 18.04, a driver older than CUDA 13).
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}|resolve:ssm:/aws/service/deeplearning/ami/\S+", image), name
    head = nodes[config["head_node_type"]]["node_config"]["IamInstanceProfile"]["Name"]
    workers = {
        n["node_config"]["IamInstanceProfile"]["Name"]
        for k, n in nodes.items()
        if k != config["head_node_type"]
    }
    assert head not in workers
    policy = json.loads((INFRA / "aws" / f"{head.rsplit('-', 1)[1]}-policy.json").read_text())
    granted: dict[str, list[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for action in statement["Action"]:
            granted.setdefault(action, []).extend(resources)
    for action in ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags", "ec2:DescribeInstances"):
        assert action in granted, f"the head's autoscaler needs {action}"
    (worker,) = workers
    assert any(r.endswith(f":role/{worker}") for r in granted["iam:PassRole"]), (
        "the head passes the workers' role"
    )


def test_kuberay_manifests_are_generated_from_their_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(INFRA / "kuberay" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    service = yaml.safe_load((INFRA / "kuberay" / "rayservice.yaml").read_text())
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == yaml.safe_load(
        (REPO / "serve" / "config.yaml").read_text()
    )


def test_rayjobs_shut_down_and_use_no_inline_credentials() -> None:
    for path in sorted((INFRA / "kuberay").glob("rayjob-*.yaml")):
        spec = yaml.safe_load(path.read_text())["spec"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        yaml.safe_load(spec["runtimeEnvYAML"])
    for path, doc in manifest_docs():
        text = yaml.safe_dump(doc)
        assert not re.search(r"AWS_SECRET_ACCESS_KEY\s*:\s*\S", text), f"{path} holds an inline credential"
        if doc.get("kind") == "Secret":
            pytest.fail(f"{path}: Secrets are created with kubectl, not committed")
    groups = {
        g["groupName"]: g
        for g in yaml.safe_load((INFRA / "kuberay" / "raycluster.yaml").read_text())["spec"][
            "workerGroupSpecs"
        ]
    }
    assert all(g["minReplicas"] == 0 for g in groups.values()), "worker groups autoscale from 0"
    workers = groups["a100"]
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert workers["template"]["spec"]["tolerations"] and workers["template"]["spec"]["nodeSelector"]
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def _entrypoints() -> list[list[str]]:
    """Each RayJob's ``python`` argv: the entrypoint is ``bash -uc 'exec python ...'`` (generate.py)."""
    out = []
    for path in sorted((INFRA / "kuberay").glob("rayjob-*.yaml")):
        outer = shlex.split(yaml.safe_load(path.read_text())["spec"]["entrypoint"])
        out.append(shlex.split(outer[2])[1:])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("argv", _entrypoints(), ids=lambda a: Path(a[1]).name)
def test_rayjob_entrypoints_exist_answer_help_and_accept_their_overrides(argv: list[str]) -> None:
    local = [a.replace("/opt/posegpt/", "") for a in argv[1:]]
    script, config = REPO / local[0], REPO / local[2]
    assert script.exists() and config.exists()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert result.returncode == 0 and "usage" in result.stdout.lower(), result.stderr[-2000:]
    # Every override names a real key of the job's config and its value, the ConfigMap's filled in, parses.
    from jobs.config_reference import job_config_classes

    classes = dict(job_config_classes())
    from posegpt.config import load_config

    settings = next(d for _, d in manifest_docs() if d.get("kind") == "ConfigMap")["data"]
    overrides = []
    for override in local[3:]:
        for key, value in sorted(settings.items(), key=lambda kv: -len(kv[0])):
            override = override.replace(f"${key}", value)
        overrides.append(override)
    cfg = load_config(classes[local[0]], config, overrides)
    assert cfg.tracking.tracking_uri == settings["MLFLOW_TRACKING_URI"]


@pytest.mark.slow
def test_mlflow_server_started_as_deployed_answers_the_in_cluster_name(tmp_path: Path) -> None:
    """The Deployment's server command, run here: 200 for the Service's name, 403 for an unknown host."""
    import http.client

    from tests.conftest import free_port, wait_http

    deployment = next(
        d for p, d in manifest_docs() if p.parent.name == "mlflow" and d.get("kind") == "Deployment"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
        HOME=str(tmp_path),
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    # The same shell command, on a free port of 127.0.0.1 with one worker.
    script = container["args"][0].replace(
        "--host 0.0.0.0 --port 5000 --workers 4", f"--host 127.0.0.1 --port {port} --workers 1"
    )
    assert script != container["args"][0]
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [*container["command"], script],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=300, proc=proc)

        def status(host: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(
                "POST", "/api/2.0/mlflow/experiments/search", body='{"max_results": 10}',
                headers={"Host": host, "Content-Type": "application/json"},
            )  # fmt: skip
            return conn.getresponse().status

        settings = next(d for _, d in manifest_docs() if d.get("kind") == "ConfigMap")["data"]
        assert status(settings["MLFLOW_TRACKING_URI"].split("://", 1)[1]) == 200
        assert status(f"localhost:{port}") == 200
        assert status("evil.example.com:5000") == 403
    finally:
        # The server's workers share its session: stop them all, and only them.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
