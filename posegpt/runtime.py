"""Process set-up shared by every entry point: cache folder and offline tools.

Entry points (jobs, the chat CLI, the Serve app, tests) call ``setup_environment``
once, first thing. Library code below them never reads environment variables;
this is the one place that *writes* them, because the third-party tools
(Hugging Face, Ultralytics, MLflow, DeepSpeed's op builder, matplotlib) only take
these settings from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache"


def setup_environment(cache_dir: str | Path = DEFAULT_CACHE_DIR) -> Path:
    """Point every tool's cache and config folder inside ``cache_dir`` and keep them offline.

    Values already set by the caller win (``setdefault``), so a cluster can point
    them elsewhere. Returns the absolute cache folder.
    """
    cache = Path(cache_dir).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    settings = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(cache / "huggingface"),
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(cache / "ultralytics"),
        "YOLO_VERBOSE": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "TORCH_EXTENSIONS_DIR": str(cache / "torch_extensions"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "XDG_CACHE_HOME": str(cache / "xdg"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu" if not _has_cuda() else "cuda",
    }
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    for key in ("HF_HOME", "YOLO_CONFIG_DIR", "TORCH_EXTENSIONS_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    return cache


def _has_cuda() -> bool:
    # Cheap check that does not import torch (which would initialise CUDA too early).
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia").exists()
