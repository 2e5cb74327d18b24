"""The preset table of ``docs/training.md``, generated from the train presets so that it cannot go stale.

    python -m posegpt.training.preset_table --write docs/training.md     (also part of ``make docs``)
    python -m posegpt.training.preset_table --check docs/training.md     (exit 1 when stale)

The table sits between ``BEGIN`` and ``END`` markers; everything else of the page is left alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from posegpt.config import load_config
from posegpt.training.config import TrainConfig
from posegpt.training.mixing import TASKS

REPO = Path(__file__).resolve().parents[2]
PRESETS: tuple[str, ...] = (
    "configs/train/tiny.yaml",
    "configs/train/llava-1.5-7b.yaml",
    "configs/train/llava-1.5-13b.yaml",
)
BEGIN = "<!-- preset table: generated from configs/train by `python -m posegpt.training.preset_table --write docs/training.md` -->"
END = "<!-- end of the generated preset table -->"


def _model_preset(path: Path) -> str:
    raw = yaml.safe_load(path.read_text()) or {}
    base = (raw.get("model") or {}).get("_base_")
    if not base:
        return "inline"
    return f"`{(path.parent / base).resolve().relative_to(REPO)}`"


def _backbone(cfg: TrainConfig) -> str:
    m = cfg.model
    if m.build_tiny_if_missing:
        t = m.tiny
        return (
            f"{t.vision_layers}-layer CLIP at {t.image_size} px + {t.text_layers}-layer Llama of width "
            f"{t.text_width} (random weights, built on first use)"
        )
    return f"`{m.base_model}`"


def _pose_encoder(cfg: TrainConfig) -> str:
    enc = cfg.model.pose_encoder
    if not enc.enabled:
        return "none (CLIP alone)"
    name = {"tiny_cnn": "tiny CNN pretrained on the synthetic world", "hmr2_vit": "HMR 2.0 ViT-H"}[enc.kind]
    where = "appended to CLIP's" if enc.mode == "append" else "in place of CLIP's"
    pool = f", grid pooled by {enc.pool}" if enc.pool > 1 else ""
    return f"{name}, {enc.input_height}×{enc.input_width}{pool}, tokens {where} (`{enc.weights}`)"


def _ratio(cfg: TrainConfig) -> str:
    ratio = cfg.data.task_ratio
    return " : ".join(f"{t} {ratio[t]}" for t in TASKS if ratio.get(t, 0) > 0)


def _resources(cfg: TrainConfig) -> str:
    res = ", ".join(f"{k}: {v:g}" for k, v in cfg.scaling.resources_per_worker.items())
    return f"{cfg.scaling.num_workers} × `{{{res}}}`" + ("" if cfg.scaling.use_gpu else ", no GPU")


def _lr(cfg: TrainConfig) -> str:
    s = cfg.schedule
    head = "" if cfg.optimizer.head_lr is None else f" (modules from scratch {cfg.optimizer.head_lr:g})"
    return f"{cfg.optimizer.lr:g}{head}, {s.decay} to {s.min_lr_ratio:g}×"


ROWS: tuple[tuple[str, Callable[[TrainConfig], str]], ...] = (
    ("backbone", _backbone),
    ("pose encoder (`model.pose_encoder`)", _pose_encoder),
    ("workers × resources", _resources),
    (
        "samples per worker × accumulation",
        lambda c: f"{c.data.batch_size_per_worker} × {c.engine.grad_accumulation}",
    ),
    (
        "samples per optimizer step",
        lambda c: f"{c.data.batch_size_per_worker * c.engine.grad_accumulation * c.scaling.num_workers:,}",
    ),
    ("task mix (`data.task_ratio`)", _ratio),
    ("steps (warm-up)", lambda c: f"{c.schedule.max_steps:,} ({c.schedule.warmup_steps})"),
    ("learning rate, schedule", _lr),
    ("DeepSpeed", lambda c: f"ZeRO {c.engine.zero_stage}, precision {c.engine.precision}"),
    (
        "LoRA r / alpha / dropout",
        lambda c: f"{c.model.lora_r} / {c.model.lora_alpha} / {c.model.lora_dropout:g}",
    ),
    ("CLIP projector", lambda c: "trained" if c.model.train_projector else "frozen"),
    (
        "pose head input",
        lambda c: (
            "standardised (running statistics)" if c.model.pose_head_input_norm == "running" else "as is"
        ),
    ),
    ("gradient checkpointing", lambda c: "on" if c.model.gradient_checkpointing else "off"),
    ("`model.max_length`", lambda c: str(c.model.max_length)),
    (
        "λ_text / λ_pose / root weight",
        lambda c: f"{c.model.lambda_text:g} / {c.model.lambda_pose:g} / {c.model.pose_loss_root_weight:g}",
    ),
    ("checkpoint every / kept", lambda c: f"{c.checkpoint.every} / {c.checkpoint.keep_last}"),
    (
        "validation every / rows per task / tasks",
        lambda c: f"{c.validation.every} / {c.validation.samples} / {', '.join(c.validation.tasks)}",
    ),
    ("worker restarts (`failure.max_failures`)", lambda c: str(c.failure.max_failures)),
    ("storage (`storage_path`)", lambda c: f"`{c.storage_path}`"),
    ("MLflow", lambda c: f"`{c.tracking.tracking_uri}`"),
    (
        "registered model",
        lambda c: f"`{c.tracking.registered_model}`" if c.logging.register_model else "none",
    ),
)


def render(presets: Sequence[str] = PRESETS) -> str:
    """The markdown table (one column per preset), markers included."""
    paths = [REPO / p for p in presets]
    configs = [load_config(TrainConfig, p) for p in paths]
    lines = [
        BEGIN,
        "| | " + " | ".join(f"`{p}`" for p in presets) + " |",
        "| --- " * (len(presets) + 1) + "|",
        "| model preset | " + " | ".join(_model_preset(p) for p in paths) + " |",
    ]
    for label, cell in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(c).replace("|", "\\|") for c in configs) + " |")
    lines.append(END)
    return "\n".join(lines)


def updated(text: str, table: str, where: str) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"{where} has no generated preset table (markers {BEGIN!r} … {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + table + tail


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DOC", help="rewrite the table in DOC")
    group.add_argument("--check", metavar="DOC", help="exit 1 when the table in DOC is stale")
    args = parser.parse_args(argv)
    doc = Path(args.write or args.check)
    text = doc.read_text()
    new = updated(text, render(), str(doc))
    if args.write:
        doc.write_text(new)
        return 0
    if new != text:
        print(f"{doc}: the preset table is stale; run python -m posegpt.training.preset_table --write {doc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
