"""Merge a PoseGPT checkpoint's LoRA into a standalone Hugging Face folder.

    python jobs/export.py --checkpoint outputs/train/checkpoint --out outputs/export
    python jobs/export.py --checkpoint s3://bucket/run/checkpoint --out /models/posegpt-merged --dtype bfloat16

The output loads with ``LlavaForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained``; ``pose_head.safetensors`` and ``posegpt.yaml``
lie beside the weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint folder, s3:// prefix or models:/name/version"
    )
    parser.add_argument("--out", required=True, help="empty local folder for the merged model")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="weight dtype (default: the checkpoint's)"
    )
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache for s3:// and MLflow downloads"
    )
    parser.add_argument("--s3-endpoint", help="endpoint URL of an S3-compatible store")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ checkpoints")
    args = parser.parse_args(argv)
    setup_environment(args.cache_dir)

    from posegpt.inference import resolve_checkpoint
    from posegpt.model.export import export_merged
    from posegpt.storage import StorageConfig

    checkpoint = resolve_checkpoint(args.checkpoint, cache_dir=args.cache_dir, tracking_uri=args.tracking_uri)
    out = export_merged(
        checkpoint,
        args.out,
        dtype=args.dtype,
        cache_dir=args.cache_dir,
        storage=StorageConfig(endpoint_url=args.s3_endpoint),
    )
    print(f"merged model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
