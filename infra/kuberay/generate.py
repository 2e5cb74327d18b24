"""Write the RayJob and RayService manifests from their single sources.

    python infra/kuberay/generate.py          # rewrite rayjob-*.yaml and rayservice.yaml
    python infra/kuberay/generate.py --check  # exit 1 when a committed manifest is stale (a test runs this)

The cluster shape comes from ``raycluster.yaml`` and the Serve application from
``serve/config.yaml``, so neither is ever copied by hand. Uses only PyYAML: it
imports nothing of the project.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
APP_DIR = "/opt/posegpt"

SMPL_DIR = "/data/smpl"
"""Where the evaluate job's head finds the licensed SMPL files (an init container copies them from ``$POSEGPT_SMPL``)."""

# Settings shared by all jobs, as config overrides filled from the ConfigMap on the head (see entrypoint()).
COMMON_OVERRIDES = (
    "storage.endpoint_url=$POSEGPT_S3_ENDPOINT",
    "tracking.tracking_uri=$MLFLOW_TRACKING_URI",
)

JOBS: dict[str, dict[str, Any]] = {
    "prepare": {
        "script": "jobs/prepare.py",
        "config": "configs/prepare/real.yaml",
        "overrides": ("raw_root=$POSEGPT_DATA", "out=$POSEGPT_SHARDS"),
        "gpu_workers": 0,
    },
    "train": {
        "script": "jobs/train.py",
        "config": "configs/train/llava-1.5-7b.yaml",
        "overrides": (
            "data.shard_root=$POSEGPT_SHARDS",
            "storage_path=$POSEGPT_RUNS",
            "model.base_model=$POSEGPT_BASE_MODEL",
            # configs/prepare/real.yaml writes no image2pose validation split (docs/data.md).
            "validation.tasks=[text2pose]",
        ),
        "gpu_workers": 8,
    },
    "evaluate": {
        "script": "jobs/evaluate.py",
        "config": "configs/eval/paper.yaml",
        "overrides": (
            "data.shard_root=$POSEGPT_SHARDS",
            # The newest version; the job moves the champion alias to it when it scores better.
            "checkpoint=models:/posegpt/latest",
            # configs/prepare/real.yaml has no SPG or RPE source.
            "data.skip_missing_tasks=true",
            f"metrics.body_model={SMPL_DIR}/SMPL_NEUTRAL.pkl",
            f"metrics.h36m_regressor={SMPL_DIR}/J_regressor_h36m.npy",
        ),
        # One model actor per GPU: configs/eval/paper.yaml runs inference.concurrency=8 actors of 1 GPU.
        "gpu_workers": 8,
        "smpl": True,
    },
}
"""Per job: entry point, preset, the overrides that make the presets chain (prepare → train → evaluate),
how many A100 workers its cluster starts with, and whether its head needs the SMPL files."""

UNSAFE_IN_ENTRYPOINT = set("\"'`\\")
"""Characters an override may not hold: the entrypoint puts each one in double quotes inside single quotes."""


def entrypoint(job: dict[str, Any]) -> str:
    """``bash -uc '<command>'``: the ``$VARIABLES`` are expanded on the Ray head, whatever submits the job.

    KubeRay's submitter runs ``bash -c "... ray job submit -- <entrypoint>"`` in a pod that
    has no ConfigMap, so a bare ``$POSEGPT_SHARDS`` would be expanded to nothing there. The
    single quotes carry the command through that shell and through ``ray job submit`` (which
    re-quotes its arguments with ``shlex.join``) to the head, whose pods hold the ConfigMap
    (``envFrom``); there ``bash -u`` expands them, and stops with "unbound variable" when one
    is missing instead of running with an empty setting. In HTTPMode, where no submitter
    shell exists, the head receives the same command.
    """
    args = [f"{APP_DIR}/{job['script']}", "--config", f"{APP_DIR}/{job['config']}"]
    args += [*job["overrides"], *COMMON_OVERRIDES]
    for arg in args:
        bad = UNSAFE_IN_ENTRYPOINT & set(arg)
        if bad:
            raise ValueError(f"override {arg!r} holds {sorted(bad)}, which the entrypoint cannot quote")
    command = "exec python " + " ".join(f'"{arg}"' for arg in args)
    return f"bash -uc '{command}'"


def cluster_spec(gpu_workers: int, max_gpu_workers: int | None = None) -> dict[str, Any]:
    """``raycluster.yaml``'s spec starting ``gpu_workers`` A100 workers, autoscaling up to ``max_gpu_workers``.

    The CPU group keeps its autoscaling from 0; with no GPU workers the A100 group is left out.
    """
    cluster = yaml.safe_load((HERE / "raycluster.yaml").read_text())
    spec = copy.deepcopy(cluster["spec"])
    groups = []
    for group in spec["workerGroupSpecs"]:
        if not _is_gpu_group(group):
            groups.append(group)
            continue
        if gpu_workers == 0 and not max_gpu_workers:
            continue
        group["replicas"] = gpu_workers
        group["minReplicas"] = gpu_workers
        group["maxReplicas"] = max(gpu_workers, 1, max_gpu_workers or 0)
        groups.append(group)
    spec["workerGroupSpecs"] = groups
    return spec


def _is_gpu_group(group: dict[str, Any]) -> bool:
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    return "nvidia.com/gpu" in limits


def with_smpl_files(spec: dict[str, Any]) -> dict[str, Any]:
    """The head copies ``$POSEGPT_SMPL`` (an ``s3://`` prefix) to ``SMPL_DIR`` before Ray starts.

    The SMPL files are licensed and never in the image; the evaluation reads them on the driver,
    which runs on the head.
    """
    pod = spec["headGroupSpec"]["template"]["spec"]
    head = pod["containers"][0]
    mount = {"name": "smpl", "mountPath": SMPL_DIR}
    head.setdefault("volumeMounts", []).append({**mount, "readOnly": True})
    pod.setdefault("volumes", []).append({"name": "smpl", "emptyDir": {"sizeLimit": "1Gi"}})
    fetch = (
        "import os; from posegpt.storage import StorageConfig, download_dir; "
        "download_dir(os.environ['POSEGPT_SMPL'], '" + SMPL_DIR + "', StorageConfig("
        "endpoint_url=os.environ.get('POSEGPT_S3_ENDPOINT') or None, "
        "region=os.environ.get('AWS_DEFAULT_REGION') or 'us-east-1'))"
    )
    pod["initContainers"] = [
        {
            "name": "fetch-smpl",
            "image": head["image"],
            "imagePullPolicy": head.get("imagePullPolicy", "IfNotPresent"),
            "command": ["python", "-c", fetch],
            "envFrom": copy.deepcopy(head["envFrom"]),
            "volumeMounts": [mount],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        }
    ]
    return spec


def serve_max_replicas(serve_config: dict[str, Any]) -> int:
    """The most model replicas ``serve/config.yaml`` autoscales to (one GPU worker each)."""
    most = 1
    for app in serve_config.get("applications", []):
        for deployment in app.get("deployments", []):
            scaling = deployment.get("autoscaling_config") or {}
            most = max(most, int(scaling.get("max_replicas", deployment.get("num_replicas", 1)) or 1))
    return most


def rayjob(name: str, job: dict[str, Any]) -> dict[str, Any]:
    spec = cluster_spec(job["gpu_workers"])
    if job.get("smpl"):
        spec = with_smpl_files(spec)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": f"posegpt-{name}", "labels": {"app.kubernetes.io/name": "posegpt-ray"}},
        "spec": {
            "entrypoint": entrypoint(job),
            "runtimeEnvYAML": yaml.safe_dump(
                {"env_vars": {"PYTHONPATH": APP_DIR, "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1"}},
                sort_keys=True,
            ),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": spec,
        },
    }


def rayservice() -> dict[str, Any]:
    serve_config = (REPO / "serve" / "config.yaml").read_text()
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "posegpt-serve", "labels": {"app.kubernetes.io/name": "posegpt-ray"}},
        "spec": {
            "serveConfigV2": serve_config,
            # GPU workers follow the model deployment's autoscaling (Ray's autoscaler adds pods).
            "rayClusterConfig": cluster_spec(1, serve_max_replicas(yaml.safe_load(serve_config))),
        },
    }


def manifests() -> dict[Path, str]:
    header = (
        "# Generated by infra/kuberay/generate.py from raycluster.yaml and serve/config.yaml: do not edit.\n"
    )
    out = {HERE / f"rayjob-{name}.yaml": rayjob(name, job) for name, job in JOBS.items()}
    out[HERE / "rayservice.yaml"] = rayservice()
    return {path: header + yaml.safe_dump(doc, sort_keys=False, width=120) for path, doc in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when a committed manifest differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in manifests().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"stale manifests: {', '.join(stale)}; run python infra/kuberay/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
