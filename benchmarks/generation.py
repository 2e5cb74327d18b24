"""Generation speed of the tiny PoseGPT: KV cache vs re-running the sequence, batch vs one by one.

    python benchmarks/generation.py [--checkpoint DIR] [--threads 2]

Figures (issue 4), all measured in this one run:

1. tokens/s generating 64 tokens, greedy, with the KV cache (``PoseGPT.generate``) vs
   cache-free decoding that re-runs the whole sequence every step (the reference
   implementation's approach). Target: cached ≥ 3× faster. Measured for a text prompt
   and for an image prompt (where cache-free decoding re-encodes the image each step).
2. pose queries/s: 16 pose requests answered as one left-padded batch vs one at a
   time. Target: ≥ 4×.
3. one training step (forward + backward) on 8 mixed samples (4 with images).
   Target: < 1 s on a 2-core machine.

Without ``--checkpoint`` the script builds the tiny base in a temporary folder and
trains it for a few seconds so that it answers pose requests with ``<POSE>``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from posegpt.runtime import setup_environment  # noqa: E402

POSE_REQUESTS = [
    f"Show me the pose of a person {what}."
    for what in (
        "standing",
        "sitting",
        "running",
        "jumping",
        "kneeling",
        "waving",
        "squatting",
        "lying down",
        "dancing",
        "walking",
        "stretching",
        "bending forward",
        "raising both arms",
        "crossing the arms",
        "on one leg",
        "throwing a ball",
    )
]


def png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (96, 64, 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def build_posing_checkpoint(folder: Path, steps: int) -> Path:
    """Tiny base + a few training steps on pose requests answered with ``<POSE>``."""
    from posegpt.config import load_config
    from posegpt.model.checkpoint import save_checkpoint
    from posegpt.model.collate import Collator
    from posegpt.model.config import PoseGPTModelConfig
    from posegpt.model.posegpt_model import build_model
    from posegpt.model.tiny import BUILTIN_CORPUS, build_tiny_base

    base = build_tiny_base(
        folder / "tiny-llava", [*BUILTIN_CORPUS, *POSE_REQUESTS, "Here is the pose <POSE>."]
    )
    cfg = load_config(
        PoseGPTModelConfig,
        REPO / "configs/model/tiny.yaml",
        [f"base_model={base}", "build_tiny_if_missing=false", "pose_head_init=identity"],
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    rows = [
        {
            "conversation": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": "Here is the pose <POSE>."},
            ],
            "image": None,
            "poses": [(rng.normal(size=72) * 0.3).tolist()],
        }
        for q in POSE_REQUESTS
    ]
    batch = Collator.for_model(model)(rows)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    done = 0
    for _ in range(steps):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        done += 1
        if out.text_loss.item() < 0.05:
            break
    print(f"trained the tiny model for {done} steps: text loss {out.text_loss.item():.3f}")
    return save_checkpoint(model.eval(), folder / "checkpoint")


@torch.no_grad()
def cache_free_generate(engine, query, n_tokens: int) -> list[int]:
    """Greedy decoding that runs the whole sequence through the model for every new token."""
    from posegpt.model.vision_input import image_inputs

    model = engine.model
    ids, image = engine.encode_query(query, "benchmark")
    pixels = (
        image_inputs(model.processor.image_processor, [image], model.cfg.pose_encoder)
        if image is not None
        else {}
    )
    seq = torch.tensor([ids])
    out: list[int] = []
    for _ in range(n_tokens):
        hidden, _ = model.encode(
            seq,
            torch.ones_like(seq),
            pixels.get("pixel_values"),
            pose_pixel_values=pixels.get("pose_pixel_values"),
        )
        logits = model.lm_logits(hidden[:, -1]).float()
        logits[:, model.image_token_id] = float("-inf")
        logits[:, engine.eos_id] = float("-inf")
        token = int(logits.argmax(-1))
        out.append(token)
        seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
    return out


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", help="PoseGPT checkpoint (default: build and briefly train the tiny one)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=100)
    args = parser.parse_args(argv)
    setup_environment()
    torch.set_num_threads(args.threads)

    from posegpt.inference import GenerationSettings, PoseGPT, Query
    from posegpt.model.collate import Collator

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = (
            Path(args.checkpoint) if args.checkpoint else build_posing_checkpoint(Path(tmp), args.train_steps)
        )
        engine = PoseGPT.from_checkpoint(checkpoint)
        _ = engine.body  # build the body model outside the timings
        print(f"machine: {torch.get_num_threads()} torch threads, device {engine.model.device}")

        n = 64
        forced = GenerationSettings(max_new_tokens=n, min_new_tokens=n)
        for label, query in (
            ("text prompt", Query(POSE_REQUESTS[0])),
            ("image prompt", Query(POSE_REQUESTS[0], png(0))),
        ):
            t_cached, gens = timed(lambda q=query: engine.generate([q], forced), args.repeats)
            t_free, tokens = timed(lambda q=query: cache_free_generate(engine, q, n), args.repeats)
            same = gens[0].token_ids == tokens
            print(
                f"[{label}] {n} tokens: cached {n / t_cached:8.1f} tok/s | cache-free {n / t_free:8.1f} tok/s | "
                f"ratio {t_free / t_cached:5.2f}x (target >= 3x) | same tokens: {same}"
            )

        queries = [Query(q) for q in POSE_REQUESTS]
        settings = GenerationSettings(max_new_tokens=16)
        t_batch, answers = timed(lambda: engine.batch(queries, settings), args.repeats)
        t_single, _ = timed(lambda: [engine.batch([q], settings)[0] for q in queries], args.repeats)
        n_poses = sum(len(a.poses) for a in answers)
        print(f"answer to {POSE_REQUESTS[0]!r}: {answers[0].text!r}")
        print(
            f"[pose queries] 16 queries ({n_poses} poses returned): batch {16 / t_batch:7.1f} q/s | "
            f"one at a time {16 / t_single:7.1f} q/s | ratio {t_single / t_batch:5.2f}x (target >= 4x)"
        )

        from posegpt.model.checkpoint import load_checkpoint

        model = load_checkpoint(checkpoint, trainable=True).train()
        rows = []
        for i in range(8):
            image = i % 2 == 0
            rows.append(
                {
                    "conversation": [
                        {"role": "user", "content": ("<image>\n" if image else "") + POSE_REQUESTS[i]},
                        {"role": "assistant", "content": "Here is the pose <POSE>."},
                    ],
                    "image": png(i) if image else None,
                    "poses": [[0.1] * 72],
                }
            )
        batch = Collator.for_model(model)(rows)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(batch).loss.backward()

        t_step, _ = timed(step, max(args.repeats, 5))
        print(
            f"[train step] forward+backward, 8 mixed samples ({batch['input_ids'].shape[1]} tokens each, "
            f"4 images): {t_step * 1000:.0f} ms (target < 1000 ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
