"""KubeRay manifests: strict CRD validation (v1.3.0 and v1.7.0), the submitter's shell replayed, the job chain.

``crds/kuberay-v1.3.0-v1.7.0.json.gz`` holds the ``v1`` ``openAPIV3Schema`` of KubeRay's
RayCluster, RayJob and RayService CRDs (``ray-operator/config/crd/bases/ray.io_*.yaml`` at the
tags v1.3.0 and v1.7.0), descriptions dropped. "Strict" is ``kubectl apply --validate=strict``:
a field the schema does not declare is an error, not silently dropped.
"""

from __future__ import annotations

import gzip
import inspect
import json
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "infra" / "kuberay"
CRDS = json.loads(
    gzip.decompress((Path(__file__).parent / "crds" / "kuberay-v1.3.0-v1.7.0.json.gz").read_bytes())
)
SETTINGS = yaml.safe_load((KUBERAY / "settings.yaml").read_text())["data"]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever Kubernetes would prune them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _custom_resources() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == "ray.io/v1":
                docs.append((path.name, doc))
    return docs


@pytest.mark.parametrize("version", sorted(CRDS))
@pytest.mark.parametrize("name,doc", _custom_resources(), ids=[n for n, _ in _custom_resources()])
def test_custom_resources_validate_strictly_against_kuberays_crds(version: str, name: str, doc: dict) -> None:
    schema = _strict(CRDS[version][doc["kind"]])
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, f"{name} against KubeRay {version}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5]
    )


def test_strict_validation_catches_an_unknown_field() -> None:
    doc = yaml.safe_load((KUBERAY / "rayjob-train.yaml").read_text())
    doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    validator = jsonschema.Draft7Validator(_strict(CRDS["v1.7.0"]["RayJob"]))
    assert any("envfrom" in e.message for e in validator.iter_errors(doc))


# --- KubeRay's submitter, replayed --------------------------------------------------------------


def kuberay_submit_command(rayjob: dict, version: str, address: str, job_id: str) -> list[str]:
    """The words KubeRay joins with spaces into the K8sJobMode submitter's bash script.

    Ports of ``GetK8sJobCommand`` (v1.3.0, ``ray-operator/controllers/ray/common/job.go``) and
    ``BuildJobSubmitCommand`` (v1.7.0, same file) for a RayJob without metadata or entrypoint
    resources; Go's ``strconv.Quote`` of the runtime-env JSON is ``json.dumps`` for ASCII text.
    """
    spec = rayjob["spec"]
    entrypoint = spec["entrypoint"].strip()
    runtime_env = json.dumps(yaml.safe_load(spec["runtimeEnvYAML"]), separators=(",", ":"), sort_keys=True)
    submit = ["ray", "job", "submit", "--address", address]
    status = ["ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1"]
    follow = ["ray", "job", "logs", "--address", address, "--follow", job_id]
    options = ["--runtime-env-json", json.dumps(runtime_env), "--submission-id", job_id]
    if version == "v1.3.0":
        return [
            "if", *status, ";", "then", *follow, ";", "else", *submit, *options, "--", entrypoint, ";", "fi",
        ]  # fmt: skip
    health = (
        'python -c "import urllib.request; r=urllib.request.urlopen('
        f"'{address}/api/gcs_healthz', timeout=10); exit(0 if b'success' in r.read() else 1)\""
    )
    wait = [
        "until",
        health,
        ">/dev/null",
        "2>&1",
        ";",
        "do",
        "echo",
        '"Waiting ..."',
        ";",
        "sleep",
        "2",
        ";",
        "done",
        ";",
    ]
    return [
        *wait, "if", "!", *status, ";", "then", *submit, "--no-wait", *options, "--", entrypoint, ";",
        "fi", ";", *follow,
    ]  # fmt: skip


def _shim(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _argv_file(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


def submitted_entrypoint(rayjob: dict, version: str, tmp: Path) -> str:
    """Run the submitter's script as KubeRay does (no ConfigMap in its environment).

    Returns the entrypoint string ``ray job submit`` sends to the head. ``ray`` and ``python``
    are stand-ins recording their arguments: what is replayed is bash's expansion of the script.
    """
    bin_dir = tmp / "submitter-bin"
    bin_dir.mkdir()
    record = tmp / "submit-argv"
    # `ray job status` fails (not yet submitted), `ray job submit` records its arguments.
    _shim(
        bin_dir,
        "ray",
        f'[ "$2" = status ] && exit 1\n[ "$2" = submit ] && printf "%s\\0" "$@" > {record}\nexit 0\n',
    )
    _shim(bin_dir, "python", "exit 0\n")  # the dashboard health check
    script = " ".join(kuberay_submit_command(rayjob, version, "http://posegpt-head-svc:8265", "rayjob-x"))
    command = ["/bin/bash", "-c", script] if version == "v1.3.0" else ["/bin/bash", "-ce", "--", script]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp)}
    assert not set(SETTINGS) & set(env)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    argv = _argv_file(record)
    entry = argv[argv.index("--") + 1 :]
    # Ray 2.60's `ray job submit` re-quotes the words after `--` with shlex.join (list2cmdline on Windows).
    from ray.dashboard.modules.job import cli

    assert "shlex.join(entrypoint)" in inspect.getsource(cli)
    return shlex.join(entry)


def head_argv(
    entrypoint: str, env: dict[str, str], tmp: Path
) -> subprocess.CompletedProcess[str] | list[str]:
    """Run an entrypoint as Ray's job supervisor does (``Popen(entrypoint, shell=True)``); the job's argv.

    ``python`` is a stand-in that records its arguments; a failed run is returned as is.
    """
    bin_dir = tmp / "head-bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp / "job-argv"
    record.unlink(missing_ok=True)
    _shim(bin_dir, "python", f'printf "%s\\0" "$@" > {record}\n')
    full_env = {**env, "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp)}
    result = subprocess.run(entrypoint, shell=True, env=full_env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return result
    return _argv_file(record)


def _rayjobs() -> list[tuple[str, dict]]:
    return [(p.stem, yaml.safe_load(p.read_text())) for p in sorted(KUBERAY.glob("rayjob-*.yaml"))]


def expected_argv(name: str) -> list[str]:
    """The job's argv with every ``$VARIABLE`` replaced by settings.yaml's value (computed here, not by generate.py)."""
    entry = yaml.safe_load((KUBERAY / f"{name}.yaml").read_text())["spec"]["entrypoint"]
    inner = shlex.split(shlex.split(entry)[2])
    assert inner[:2] == ["exec", "python"]
    out = []
    for word in inner[2:]:
        for key, value in sorted(SETTINGS.items(), key=lambda kv: -len(kv[0])):
            word = word.replace(f"${key}", value)
        assert "$" not in word, f"{name}: {word} names a variable settings.yaml lacks"
        out.append(word)
    return out


@pytest.mark.parametrize("version", ["v1.3.0", "v1.7.0"])
@pytest.mark.parametrize("name,rayjob", _rayjobs(), ids=[n for n, _ in _rayjobs()])
def test_settings_reach_the_job_through_kuberays_submitter(
    version: str, name: str, rayjob: dict, tmp_path: Path
) -> None:
    sent = submitted_entrypoint(rayjob, version, tmp_path)
    argv = head_argv(sent, dict(SETTINGS), tmp_path)
    assert isinstance(argv, list), argv.stderr
    assert argv == expected_argv(name)
    assert any(a.startswith("tracking.tracking_uri=http://") for a in argv)
    assert f"storage.endpoint_url={SETTINGS['POSEGPT_S3_ENDPOINT']}" in argv


@pytest.mark.parametrize("name,rayjob", _rayjobs(), ids=[n for n, _ in _rayjobs()])
def test_settings_reach_the_job_without_a_submitter_shell(name: str, rayjob: dict, tmp_path: Path) -> None:
    # HTTPMode: the operator posts the entrypoint to the dashboard; only the head's shell sees it.
    argv = head_argv(rayjob["spec"]["entrypoint"], dict(SETTINGS), tmp_path)
    assert argv == expected_argv(name)


def test_a_head_without_the_configmap_stops_instead_of_running_with_empty_settings(tmp_path: Path) -> None:
    rayjob = yaml.safe_load((KUBERAY / "rayjob-train.yaml").read_text())
    result = head_argv(submitted_entrypoint(rayjob, "v1.7.0", tmp_path), {}, tmp_path)
    assert isinstance(result, subprocess.CompletedProcess) and result.returncode != 0
    assert "unbound variable" in result.stderr


def test_every_pod_of_the_jobs_reads_the_settings() -> None:
    for name, rayjob in _rayjobs():
        spec = rayjob["spec"]["rayClusterSpec"]
        pods = [spec["headGroupSpec"]["template"]["spec"]] + [
            g["template"]["spec"] for g in spec["workerGroupSpecs"]
        ]
        for pod in pods:
            refs = [e.get("configMapRef", {}).get("name") for e in pod["containers"][0]["envFrom"]]
            assert "posegpt-settings" in refs, name


# --- The presets chain: prepare → train → evaluate → RayService ----------------------------------


def _overrides(name: str) -> dict[str, str]:
    return dict(a.split("=", 1) for a in expected_argv(name)[3:])


def test_the_jobs_chain_through_their_settings() -> None:
    prepare, train, evaluate = (
        _overrides("rayjob-prepare"),
        _overrides("rayjob-train"),
        _overrides("rayjob-evaluate"),
    )
    assert prepare["out"] == train["data.shard_root"] == evaluate["data.shard_root"]
    assert train["storage_path"].startswith("s3://") and train["model.base_model"].startswith("s3://")
    # configs/prepare/real.yaml: text2pose is the only task with a val split; no SPG/RPE sources.
    real = yaml.safe_load((REPO / "configs" / "prepare" / "real.yaml").read_text())
    readers = {s["reader"] for s in real["sources"].values()}
    assert "posescript" in readers and train["validation.tasks"] == "[text2pose]"
    assert evaluate["data.skip_missing_tasks"] == "true"
    for key in ("metrics.body_model", "metrics.h36m_regressor"):
        assert evaluate[key].startswith("/"), (
            f"{key} must be absolute: the job's folder is not the repository"
        )
    # The evaluate job's head copies the SMPL files there before Ray starts.
    head = yaml.safe_load((KUBERAY / "rayjob-evaluate.yaml").read_text())["spec"]["rayClusterSpec"][
        "headGroupSpec"
    ]
    mounts = {m["mountPath"] for m in head["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert str(Path(evaluate["metrics.body_model"]).parent) in mounts
    init = head["template"]["spec"]["initContainers"][0]
    assert "POSEGPT_SMPL" in init["command"][-1] and "POSEGPT_SMPL" in SETTINGS
    # The evaluation scores the newest version; the service serves the one it promoted.
    assert evaluate["checkpoint"] == "models:/posegpt/latest"
    service = yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve["applications"][0]["args"]["checkpoint"] == "models:/posegpt@champion"


def test_prepare_gets_cpu_workers_from_zero_and_no_gpu_group() -> None:
    spec = yaml.safe_load((KUBERAY / "rayjob-prepare.yaml").read_text())["spec"]["rayClusterSpec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu"}
    assert groups["cpu"]["minReplicas"] == 0 and groups["cpu"]["maxReplicas"] >= 1
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "data tasks must not land on the head"


def test_heads_have_shared_memory_and_pods_run_as_non_root() -> None:
    docs = [yaml.safe_load((KUBERAY / "raycluster.yaml").read_text())["spec"]]
    docs += [r["spec"]["rayClusterSpec"] for _, r in _rayjobs()]
    docs.append(yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())["spec"]["rayClusterConfig"])
    for spec in docs:
        head = spec["headGroupSpec"]["template"]["spec"]
        shm = {m["name"] for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm"}
        assert any(v["name"] in shm and v["emptyDir"]["medium"] == "Memory" for v in head["volumes"])
        for pod in [head] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]:
            ctx = pod["securityContext"]
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] == str(
        docs[0]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )
    assert " wget " in dockerfile, "KubeRay's probes run wget in the Ray containers"


def test_generate_refuses_an_override_it_cannot_quote() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kuberay_generate", KUBERAY / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    with pytest.raises(ValueError, match="cannot quote"):
        generate.entrypoint({"script": "jobs/train.py", "config": "c.yaml", "overrides": ("name=it's",)})
