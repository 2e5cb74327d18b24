"""The main job on the embedded default, end to end on one machine (``make demo``).

    python jobs/demo.py                                   # everything under outputs/demo/
    python jobs/demo.py --config configs/demo/default.yaml out=outputs/demo2 fresh=true
    python jobs/demo.py train_overrides='[schedule.max_steps=100]' serve=false
    python jobs/demo.py last_step=3                       # the data only: world, detector, shards

Steps, each the same command a user would submit to a cluster, run against one local
Ray that this process starts (or the cluster named by ``RAY_ADDRESS``):

1. ``jobs/synth.py``          the synthetic world (raw PoseScript/AMASS, SPIN/HMR2, RPE, SPG, LLaVA data)
2. ``jobs/train_detector.py`` a small YOLO person detector for that world
3. ``jobs/prepare.py``        Ray Data: raw data → Parquet QA shards (+ manifest, rejects)
4. ``jobs/train.py``          Ray Train + DeepSpeed + LoRA on the tiny preset (builds the tiny model)
5. ``jobs/evaluate.py``       metrics against the baselines, report with rendered bodies
6. ``jobs/compare.py``        the MLflow runs side by side
7. the Ray Serve application on 127.0.0.1, answering a batch of pose queries (one with detection)

A step whose output is already there is reused (training resumes from its latest
checkpoint and stops at once when it is complete); ``fresh=true`` starts over.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402

DEFAULT_PRESET = REPO / "configs" / "demo" / "default.yaml"


@dataclass
class DemoConfig:
    """Settings of ``jobs/demo.py``: where everything goes and which preset each step uses."""

    out: str = "outputs/demo"
    """Folder for everything the demo writes: world, detector, shards, train, eval, compare, serve, mlflow.db."""
    fresh: bool = False
    """Delete ``out`` first and redo every step; otherwise finished steps are reused."""
    world_size: str = "medium"
    """Preset of the synthetic world (``configs/synth/<world_size>.yaml``)."""
    detector_preset: str = "configs/detect/tiny.yaml"
    """Preset of ``jobs/train_detector.py``."""
    prepare_preset: str = "configs/prepare/synthetic.yaml"
    """Preset of ``jobs/prepare.py``."""
    train_preset: str = "configs/train/tiny.yaml"
    """Preset of ``jobs/train.py``."""
    eval_preset: str = "configs/eval/tiny.yaml"
    """Preset of ``jobs/evaluate.py``."""
    compare_preset: str = "configs/compare/default.yaml"
    """Preset of ``jobs/compare.py``."""
    detector_overrides: list[str] = field(default_factory=list)
    """Extra ``key=value`` settings for ``jobs/train_detector.py`` (e.g. ``max_images=600`` to bound its time)."""
    train_overrides: list[str] = field(default_factory=list)
    """Extra ``key=value`` settings for ``jobs/train.py`` (e.g. ``schedule.max_steps=100``)."""
    eval_overrides: list[str] = field(default_factory=list)
    """Extra ``key=value`` settings for ``jobs/evaluate.py`` (e.g. ``data.max_samples=100``)."""
    serve: bool = True
    """Start the Serve application at the end and send it a batch of pose queries."""
    last_step: int = 7
    """Stop after this step (3: the world, detector and shards only; 4: up to the trained checkpoint)."""
    serve_port: int = 8000
    """Port of the service on 127.0.0.1 (0: any free port)."""
    num_cpus: int = 2
    """CPUs of the local Ray this job starts (unused when ``RAY_ADDRESS`` names a cluster)."""
    cache_dir: str = ""
    """Cache folder for models and tools' settings (empty: the project's ``.cache/``)."""


class DemoError(RuntimeError):
    """A step failed; the message names it and the command to rerun it alone."""


DEMO_TEXT_QUERIES: tuple[str, ...] = (
    "Show me a person sitting on the floor.",
    "Generate the pose of someone raising both arms above the head.",
    "What does a person proposing on one knee look like? Give the SMPL pose.",
    "Show me a person walking forward.",
    "Give me the pose of a person squatting low.",
    "Someone is reaching forward with the right hand. Show the pose.",
)
"""Free-form pose requests the demo sends the service (tests/posegpt/training/test_pose_answer_rate.py asks them too)."""


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass(frozen=True)
class Paths:
    """Where each step writes, all under ``out``."""

    out: Path

    @property
    def world(self) -> Path:
        return self.out / "world"

    @property
    def detector(self) -> Path:
        return self.out / "detector"

    @property
    def shards(self) -> Path:
        return self.out / "shards"

    @property
    def train(self) -> Path:
        return self.out / "train"

    @property
    def eval(self) -> Path:
        return self.out / "eval"

    @property
    def compare(self) -> Path:
        return self.out / "compare"

    @property
    def serve(self) -> Path:
        return self.out / "serve"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.out / 'mlflow.db'}"


def _run_job(title: str, argv: list[str], env: dict[str, str]) -> str:
    """Run one job as its own process (its output streams through); returns what it printed to stdout."""
    cmd = [sys.executable, *argv]
    _log(f"{title}: {' '.join(argv)}")
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    code = proc.wait()
    if code != 0:
        raise DemoError(
            f"{title} failed (exit {code}); rerun it alone with: {sys.executable} {' '.join(argv)}"
        )
    _log(f"{title}: done in {time.time() - start:.0f}s")
    return "".join(lines)


def _start_ray(cfg: DemoConfig) -> str:
    """A local Ray owned by this process (it ends with it); returns the address jobs connect to."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        info = ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        # The dashboard also serves Ray's state API, which Ray Train's placement-group cleaner polls.
        info = ray.init(
            num_cpus=cfg.num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
        )
    address = ray.get_runtime_context().gcs_address
    dashboard = f"http://{info.dashboard_url}" if info.dashboard_url else "off"
    _log(f"Ray at {address} with {ray.cluster_resources().get('CPU', 0):.0f} CPUs; dashboard {dashboard}")
    return address


def _checkpoint(cfg: DemoConfig, paths: Paths, train_args: list[str]) -> str:
    from posegpt.config import load_config
    from posegpt.training.config import TrainConfig
    from posegpt.training.trainer import latest_checkpoint, resolve_config

    tcfg = load_config(TrainConfig, REPO / cfg.train_preset, train_args)
    ckpt = latest_checkpoint(resolve_config(tcfg))
    if ckpt is None:
        raise DemoError(f"training wrote no checkpoint under {paths.train}")
    return ckpt


def _detector_settings(paths: Paths) -> dict[str, Any]:
    """The ``DetectorConfig`` that ``jobs/train_detector.py`` wrote for its weights."""
    import yaml

    return yaml.safe_load((paths.detector / "detector.yaml").read_text())


def _detector_overrides(paths: Paths, prefix: str) -> list[str]:
    """``<prefix><key>=<value>`` for the settings the detector job wrote (weights, image size, padding)."""
    detector = _detector_settings(paths)
    return [
        f"{prefix}{k}={detector[k]}"
        for k in ("weights", "image_size", "padding", "min_score")
        if k in detector
    ]


def _stopped(summary: dict[str, Any], started: float) -> dict[str, Any]:
    summary["minutes"] = (time.time() - started) / 60
    return summary


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Every step in order, up to ``cfg.last_step``; returns what the summary prints."""
    if not 1 <= cfg.last_step <= 7:
        raise DemoError(f"last_step must be in 1..7 (the demo's steps), got {cfg.last_step}")
    out = Path(cfg.out)
    out = out if out.is_absolute() else (REPO / out)
    if cfg.fresh and out.exists():
        _log(f"fresh=true: removing {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = Paths(out.resolve())
    cache = cfg.cache_dir or str(DEFAULT_CACHE_DIR)
    started = time.time()

    address = _start_ray(cfg)
    env = dict(os.environ, RAY_ADDRESS=address, PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    tracking = f"tracking.tracking_uri={paths.tracking_uri}"
    summary: dict[str, Any] = {"out": str(paths.out), "tracking_uri": paths.tracking_uri}

    # 1. world
    if (paths.world / "world.json").is_file():
        _log(f"1/7 synthetic world: reusing {paths.world}")
    else:
        shutil.rmtree(paths.world, ignore_errors=True)  # a half-written world from an interrupted run
        _run_job(
            "1/7 synthetic world",
            ["jobs/synth.py", "--out", str(paths.world), "--cache-dir", cache, f"size={cfg.world_size}"],
            env,
        )
    summary["world"] = str(paths.world)
    if cfg.last_step == 1:
        return _stopped(summary, started)

    # 2. detector (the job reuses weights trained with the same settings and data)
    det_out = _run_job(
        "2/7 person detector",
        [
            "jobs/train_detector.py",
            "--world",
            str(paths.world),
            "--out",
            str(paths.detector),
            "--config",
            str(REPO / cfg.detector_preset),
            "--cache-dir",
            cache,
            # Weights are keyed by training config and data: the tests' and other demos' runs are reused.
            "--weights-cache",
            str(Path(cache) / "detector"),
            tracking,
            *cfg.detector_overrides,
        ],
        env,
    )
    summary["detector"] = next((ln for ln in det_out.splitlines() if "mAP@0.5" in ln), "").strip()
    if cfg.last_step == 2:
        return _stopped(summary, started)

    # 3. shards
    if (paths.shards / "manifest.json").is_file():
        _log(f"3/7 QA shards: reusing {paths.shards}")
    else:
        shutil.rmtree(paths.shards, ignore_errors=True)
        prep_out = _run_job(
            "3/7 QA shards (Ray Data)",
            [
                "jobs/prepare.py",
                "--config",
                str(REPO / cfg.prepare_preset),
                "--cache-dir",
                cache,
                f"raw_root={paths.world}",
                f"out={paths.shards}",
                tracking,
            ],
            env,
        )
        summary["prepare"] = next(
            (ln for ln in prep_out.splitlines() if "read" in ln and "accepted" in ln), ""
        )
    summary["shards"] = str(paths.shards)
    if cfg.last_step == 3:
        return _stopped(summary, started)

    # 4. training (resumes; a finished run returns after its last checkpoint)
    train_args = [
        f"storage_path={paths.train}",
        f"data.shard_root={paths.shards}",
        tracking,
        *cfg.train_overrides,
    ]
    _run_job(
        "4/7 training (Ray Train + DeepSpeed)",
        ["jobs/train.py", "--config", str(REPO / cfg.train_preset), *train_args],
        env,
    )
    checkpoint = _checkpoint(cfg, paths, train_args)
    summary["checkpoint"] = checkpoint
    if cfg.last_step == 4:
        return _stopped(summary, started)

    # 5. evaluation
    eval_text = _run_job(
        "5/7 evaluation",
        [
            "jobs/evaluate.py",
            "--config",
            str(REPO / cfg.eval_preset),
            f"checkpoint={checkpoint}",
            f"output_dir={paths.eval}",
            f"data.shard_root={paths.shards}",
            f"cache_dir={cache}",
            tracking,
            *_detector_overrides(paths, "baselines.detector."),
            *cfg.eval_overrides,
        ],
        env,
    )
    summary["evaluation"] = eval_text[eval_text.find("evaluation of") :].strip()
    if cfg.last_step == 5:
        return _stopped(summary, started)

    # 6. comparison
    cmp_text = _run_job(
        "6/7 run comparison",
        [
            "jobs/compare.py",
            "--config",
            str(REPO / cfg.compare_preset),
            f"output_dir={paths.out}",
            tracking,
        ],
        env,
    )
    summary["compare_csv"] = next((ln[5:] for ln in cmp_text.splitlines() if ln.startswith("CSV: ")), "")
    summary["compare_html"] = next((ln[6:] for ln in cmp_text.splitlines() if ln.startswith("HTML: ")), "")
    if cfg.last_step == 6:
        return _stopped(summary, started)

    # 7. service
    if cfg.serve:
        summary["serve"] = serve_and_query(cfg, paths, checkpoint)
    summary["minutes"] = (time.time() - started) / 60
    return summary


def _scene_image(paths: Paths) -> tuple[Path, int]:
    """A held-out multi-person RPE scene of the world and its number of people."""
    entries = json.loads((paths.world / "rpe" / "rpe_test.json").read_text())
    entry = max(entries, key=lambda e: int(e.get("num_people", 1)))
    return paths.world / "rpe" / entry["image"], int(entry.get("num_people", 1))


def serve_and_query(cfg: DemoConfig, paths: Paths, checkpoint: str) -> dict[str, Any]:
    """Deploy ``serve/config.yaml`` on the demo's checkpoint (CPU, one replica), send pose queries, shut down."""
    import httpx
    from ray import serve

    from serve.deploy import deploy, load_deploy_config

    _log("7/7 service: deploying serve/config.yaml on the demo checkpoint")
    detector = _detector_settings(paths)
    port = cfg.serve_port
    if port == 0:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    config = load_deploy_config(
        args={
            "checkpoint": checkpoint,
            "device": "cpu",
            "dtype": None,
            "torch_threads": 1,
            "api_key_env": None,
            "detector": detector,
            "generation": {"max_new_tokens": 32},
        },
        deployments={
            "PoseModel": {"ray_actor_options": {"num_cpus": 1, "num_gpus": 0}},
            "PoseIngress": {"ray_actor_options": {"num_cpus": 0}},
            # The cluster file asks 2 CPUs per detector replica; the demo's small Ray has none to spare.
            "PersonDetector": {"ray_actor_options": {"num_cpus": 0, "num_gpus": 0}},
        },
        replace={
            "PoseModel": {"autoscaling_config": None, "num_replicas": 1},
            "PersonDetector": {"autoscaling_config": None, "num_replicas": 1},
        },
    )

    def edit_round_trip(ask: str) -> list[str]:
        """Ask for a pose, send it back by its id with an edit, and summarise both poses."""
        import numpy as np

        left_wrist = 20  # SMPL joint index: the edit asks to raise the left arm

        def chat(messages: list[dict[str, Any]]) -> dict[str, Any]:
            response = httpx.post(
                f"{url}/v1/chat", json={"messages": messages, "max_new_tokens": 32}, timeout=120
            )
            if response.status_code != 200:
                raise DemoError(f"POST /v1/chat answered {response.status_code}: {response.text[:500]}")
            return response.json()

        start = time.time()
        first = chat([{"role": "user", "content": ask}])
        if not first["poses"]:
            return [f"edit round trip skipped: {ask!r} got no pose ({first['text'][:60]!r})"]
        before = first["poses"][0]
        instruction = "<POSE_IN> Now raise the left arm."
        edited = chat(
            [
                {"role": "user", "content": ask},
                {"role": "assistant", "content": first["text"]},
                {"role": "user", "content": instruction, "poses": [before["id"]]},
            ]
        )
        seconds = time.time() - start
        if not edited["poses"]:
            return [f"edit of pose {before['id']} by id answered no pose ({edited['text'][:60]!r})"]
        after = edited["poses"][0]
        a, b = np.asarray(before["joints"]), np.asarray(after["joints"])
        moved = float(np.linalg.norm(a - b, axis=1).mean())
        # Camera frame: y points down, so a raised wrist has a smaller y.
        return [
            f"edit round trip ({seconds:.1f}s): {ask!r} -> pose {before['id']}; "
            f"{instruction!r} with that id -> pose {after['id']}",
            f"  before: left wrist y {a[left_wrist, 1]:+.2f} m; after: {b[left_wrist, 1]:+.2f} m; "
            f"joints moved {moved * 100:.1f} cm on average",
        ]

    url = f"http://127.0.0.1:{port}"
    try:
        deploy(config, host="127.0.0.1", port=port, timeout_s=300)
        texts = list(DEMO_TEXT_QUERIES)
        scene, people = _scene_image(paths)
        image = base64.b64encode(scene.read_bytes()).decode()
        queries: list[dict[str, Any]] = [{"text": t} for t in texts]
        queries.append(
            {"text": "What is the pose of each person in this image?", "image": image, "detect": True}
        )
        start = time.time()
        response = httpx.post(f"{url}/v1/poses", json={"queries": queries}, timeout=600)
        elapsed = time.time() - start
        if response.status_code != 200:
            raise DemoError(f"POST /v1/poses answered {response.status_code}: {response.text[:500]}")
        results = response.json()["results"]
        paths.serve.mkdir(parents=True, exist_ok=True)
        (paths.serve / "answers.json").write_text(json.dumps(results, indent=1))
        saved = []
        for i, result in enumerate(results):
            for j, pose in enumerate(result["poses"]):
                png = httpx.get(url + pose["mesh"]["png_url"], timeout=60)
                if png.status_code == 200:
                    target = paths.serve / f"query{i}_pose{j}.png"
                    target.write_bytes(png.content)
                    saved.append(str(target))
        lines = [
            f"{q['text'][:60]:<60} → {len(r['poses'])} pose(s)"
            + (f", {len(r['people'] or [])} of {people} people detected" if q.get("detect") else "")
            for q, r in zip(queries, results, strict=True)
        ]
        _log(f"7/7 service: {len(queries)} queries answered in {elapsed:.1f}s")
        edit = edit_round_trip(texts[0])
        for line in edit:
            _log(f"7/7 service: {line}")
        return {
            "url": url,
            "answers": lines,
            "seconds": elapsed,
            "pngs": saved,
            "answers_file": str(paths.serve / "answers.json"),
            "edit": edit,
        }
    finally:
        serve.shutdown()


def print_summary(summary: dict[str, Any]) -> None:
    out = summary["out"]
    bar = "=" * 78
    lines = [
        bar,
        f"PoseGPT demo finished in {summary['minutes']:.1f} minutes; everything is under {out}",
        f"  synthetic world   {summary['world']}",
    ]
    if "detector" in summary:
        lines.append(f"  detector          {summary['detector'] or '(see detector/metrics.json)'}")
    if "shards" in summary:
        lines.append(f"  QA shards         {summary['shards']}  (manifest.json, rejects/)")
    if summary.get("prepare"):
        lines.append(f"                    {summary['prepare'].strip()}")
    if "checkpoint" in summary:
        lines.append(f"  checkpoint        {summary['checkpoint']}")
    if "evaluation" in summary:
        lines.append(f"  report            {out}/eval/report/report.md (rendered bodies beside it)")
    if "compare_csv" in summary:
        compared = summary.get("compare_html") or summary.get("compare_csv") or out + "/compare"
        lines.append(f"  run comparison    {compared}")
    if "evaluation" in summary:
        lines += ["", summary["evaluation"]]
    serve_info = summary.get("serve")
    if serve_info:
        lines += [
            "",
            f"Service answered a batch of {len(serve_info['answers'])} queries in {serve_info['seconds']:.1f}s:",
        ]
        lines += [f"  {line}" for line in serve_info["answers"]]
        lines.append(f"  answers: {serve_info['answers_file']}; bodies: {out}/serve/*.png")
        if serve_info.get("edit"):
            lines.append("  A pose edited by its id (the page's 'Edit this pose'):")
            lines += [f"    {line}" for line in serve_info["edit"]]
        lines.append(f"  serve it again: serve run serve.app:app checkpoint={summary['checkpoint']}")
    lines += [
        "",
        "MLflow UI (params, curves, reports, registered model):",
        f"  .venv/bin/mlflow ui --backend-store-uri {summary['tracking_uri']} --host 127.0.0.1 --port 5000",
        bar,
    ]
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=str(DEFAULT_PRESET), help="YAML preset (configs/demo/default.yaml)"
    )
    parser.add_argument("--out", default=None, help="output folder (same as out=...)")
    parser.add_argument("overrides", nargs="*", help="key=value settings of DemoConfig, e.g. fresh=true")
    args = parser.parse_args(argv)

    from posegpt.config import ConfigError, load_config

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    try:
        cfg = load_config(DemoConfig, args.config, overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    setup_environment(cfg.cache_dir or DEFAULT_CACHE_DIR)
    try:
        summary = run_demo(cfg)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
