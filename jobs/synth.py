"""Write the synthetic world: raw PoseScript/AMASS, SPIN/HMR2, RPE, SPG and LLaVA data.

    python jobs/synth.py --out outputs/world size=medium
    python jobs/synth.py --out outputs/world-small size=small seed=3
    python jobs/synth.py --out s3://bucket/world size=small storage.endpoint_url=http://127.0.0.1:9000
    python jobs/synth.py --out outputs/world-large size=large images=40000

``size=NAME`` picks the preset ``configs/synth/NAME.yaml`` (small, medium, large);
``--config PATH`` names another preset; other ``key=value`` arguments override
``SynthConfig`` fields. An ``s3://`` output is written to a local temporary folder
first and then uploaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402

PRESETS = REPO / "configs" / "synth"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--config", default=None, help="preset YAML (default: configs/synth/<size>.yaml)")
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache folder (body model, tools)"
    )
    parser.add_argument("overrides", nargs="*", help="size=small|medium|large and key=value overrides")
    args = parser.parse_args(argv)
    cache = setup_environment(args.cache_dir)

    from pipelines.synthetic import SynthConfig, write_world
    from posegpt.config import ConfigError, load_config
    from posegpt.storage import is_s3, upload_dir

    size = "small"
    overrides = []
    for item in args.overrides:
        if item.startswith("size="):
            size = item.split("=", 1)[1]
        else:
            overrides.append(item)
    config_path = Path(args.config) if args.config else PRESETS / f"{size}.yaml"
    if not args.config and not config_path.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        print(f"synth: unknown size {size!r}; presets: {known}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(SynthConfig, config_path, overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2

    if is_s3(args.out):
        with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
            summary = write_world(cfg, tmp, cache_dir=cache)
            upload_dir(tmp, args.out, cfg.storage)
    else:
        summary = write_world(cfg, args.out, cache_dir=cache)
    m = summary.manifest
    counts = {
        "sequences": m["amass"]["sequences"],
        "poses": sum(m["posescript_v2"][s] for s in ("train", "val", "test")),
        "image_rows": m["image_rows"],
        "rpe_entries": sum(v["entries"] for v in m["rpe"].values()),
        "llava_rows": m["llava"]["rows"],
    }
    times = " ".join(f"{k}={v:.1f}s" for k, v in summary.seconds.items())
    print(f"synth: wrote {args.out} ({config_path.name}): " + " ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"synth: timings {times}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
