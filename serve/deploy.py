"""Deploy a Serve config file from Python, as ``serve run serve/config.yaml`` does, and wait for it.

``serve deploy`` sends the same config to the dashboard's REST API; this takes
the path ``serve run <config file>`` takes (start Serve with the given HTTP
options, hand the config to the controller), for clusters without a dashboard
such as the tests' local Ray. Re-applying a config where only a deployment's
``user_config`` changed reconfigures the running replicas in place.

    cfg = load_deploy_config("serve/config.yaml", args={"checkpoint": ckpt, "device": "cpu"},
                             deployments={"PoseModel": {"ray_actor_options": {"num_cpus": 0, "num_gpus": 0}}})
    deploy(cfg, host="127.0.0.1", port=8123)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yaml"


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_deploy_config(
    path: str | Path = DEFAULT_CONFIG,
    *,
    app: str | None = None,
    args: Mapping[str, Any] | None = None,
    deployments: Mapping[str, Mapping[str, Any]] | None = None,
    replace: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Serve config (a dict) from ``path`` with overrides for one application (the first by default).

    ``args`` and ``deployments`` (by deployment name) are merged into the file's
    entries; ``replace`` sets whole options of a deployment (e.g. drop
    ``autoscaling_config`` by replacing it with ``None``, which removes the key).
    """
    config = yaml.safe_load(Path(path).read_text())
    apps = config.get("applications") or []
    if not apps:
        raise ValueError(f"{path}: no applications")
    target = apps[0] if app is None else next((a for a in apps if a.get("name") == app), None)
    if target is None:
        raise ValueError(f"{path}: no application named {app!r}; have {[a.get('name') for a in apps]}")
    target["args"] = _merge(target.get("args") or {}, args or {})
    entries = {d["name"]: d for d in target.setdefault("deployments", [])}
    for name, options in (deployments or {}).items():
        if name not in entries:
            entries[name] = {"name": name}
            target["deployments"].append(entries[name])
        entries[name].update(_merge(entries[name], options))
    for name, options in (replace or {}).items():
        entry = entries.setdefault(name, {"name": name})
        if entry not in target["deployments"]:
            target["deployments"].append(entry)
        for key, value in options.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = copy.deepcopy(value)
    return config


def deploy(
    config: Mapping[str, Any], *, host: str | None = None, port: int | None = None, timeout_s: float = 300.0
) -> None:
    """Apply ``config`` to the connected Ray cluster and wait until its applications run.

    ``host``/``port`` override the config's HTTP options (they only take effect when
    Serve is not running yet, as for ``serve run``).
    """
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(dict(config))
    http = schema.http_options.model_dump()
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    client = serve_start(http_options=http, proxy_location=schema.proxy_location)
    client.deploy_apps(schema)
    wait_running([a.name for a in schema.applications], timeout_s)


def wait_running(apps: list[str], timeout_s: float = 300.0) -> None:
    """Block until every named application is RUNNING; raise with Serve's message if one fails."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    # A re-applied config first shows the previous state; wait for the deploy to be picked up.
    time.sleep(0.5)
    while True:
        status = serve.status().applications
        states = {name: status[name].status if name in status else "NOT_STARTED" for name in apps}
        failed = {n: status[n].message for n in apps if n in status and status[n].status == "DEPLOY_FAILED"}
        if failed:
            raise RuntimeError(f"Serve applications failed to deploy: {failed}")
        if all(s == "RUNNING" for s in states.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Serve applications not running after {timeout_s:.0f}s: {states}")
        time.sleep(0.5)


def replica_counts(app: str, deployment: str) -> dict[str, int]:
    """Replicas of a deployment by state (``RUNNING``, ``STARTING``, ``STOPPING``...), from ``serve.status()``."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return {}
    return {str(k): int(v) for k, v in status.deployments[deployment].replica_states.items()}


__all__ = ["DEFAULT_CONFIG", "deploy", "load_deploy_config", "replica_counts", "wait_running"]
