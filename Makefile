# PoseGPT on Ray. `make demo` runs the main job on the embedded default, `make test` the tests.
# Everything installs into .venv/ at the repository root; caches live in .cache/.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CACHE := $(CURDIR)/.cache
OUT ?= outputs/demo
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CACHE)/ultralytics
export MLFLOW_DISABLE_TELEMETRY := true
export TORCH_EXTENSIONS_DIR := $(CACHE)/torch_extensions
export HF_HOME := $(CACHE)/huggingface
export MPLCONFIGDIR := $(CACHE)/matplotlib
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install test test-fast lint format demo compare lock browser clean-demo docs pose-encoder

install: $(STAMP)

# Reinstalls only when the pins change; the lock file fixes every transitive version.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	@# DeepSpeed compiles its CPU shared-memory collective op with g++ the first time a training
	@# process starts (1-2 minutes on 2 cores, inside the first run): build it once, here, into
	@# TORCH_EXTENSIONS_DIR, exactly as deepspeed.comm does on first use (a no-op where it does not apply).
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	@touch $(STAMP)

# Regenerate the lock after changing pyproject.toml's dependencies.
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

# Debian's Chromium for the browser test of the web page (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; }

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: install
	$(PY) jobs/demo.py --out $(OUT)

compare: install
	$(PY) jobs/compare.py --config configs/compare/default.yaml

docs: install
	$(PY) jobs/config_reference.py --write docs/configuration.md
	$(PY) -m posegpt.training.preset_table --write docs/training.md

# Remake the tiny pose encoder's shipped weights and provenance (posegpt/vision/weights/), about
# 30 minutes on 2 cores: renders its own synthetic world (seed 1), then trains for 20 minutes.
pose-encoder: install
	$(PY) jobs/pretrain_pose_encoder.py --config configs/pose_encoder/tiny.yaml
