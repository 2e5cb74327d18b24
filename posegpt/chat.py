"""Terminal chat with a PoseGPT checkpoint; every pose is written as ``.obj`` and ``.png``.

    python -m posegpt.chat --checkpoint outputs/train/checkpoint [--image person.jpg]
    python -m posegpt.chat --checkpoint DIR --message "Show me a person doing a lunge."   # one turn, no prompt

Type a message and press enter; ``/reset`` starts a new conversation, ``/quit`` (or
end of input) leaves. The image, when given, belongs to the first turn of every conversation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment


def write_pose_files(answer: Any, body: Any, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>_pose<i>.obj`` and ``.png`` (front and side views) for every pose of ``answer``."""
    from posegpt.render import part_face_colors, render_views, save_png, write_obj

    paths: list[Path] = []
    if answer.vertices is None or len(answer.vertices) == 0:
        return paths
    colors = part_face_colors(body.faces, body.skinning_weights.detach().cpu().numpy())
    for i, vertices in enumerate(answer.vertices):
        paths.append(write_obj(out_dir / f"{stem}_pose{i}.obj", vertices, body.faces))
        paths.append(save_png(out_dir / f"{stem}_pose{i}.png", render_views(vertices, body.faces, colors)))
    return paths


def _lines(stream: TextIO, interactive: bool) -> Iterator[str]:
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = stream.readline()
        if not line:
            return
        yield line.rstrip("\n")


def run_chat(
    model: Any,
    inputs: Iterable[str],
    *,
    image: Any = None,
    out_dir: Path,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    out: TextIO = sys.stdout,
) -> list[Any]:
    """Answer each line of ``inputs`` in one conversation; returns the answers."""
    messages: list[dict[str, str]] = []
    answers = []
    turn = 0
    for line in inputs:
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            messages, turn = [], turn + 1
            print("(new conversation)", file=out)
            continue
        messages.append({"role": "user", "content": text})
        try:
            # The whole conversation is encoded again each turn, so the image (which sits in
            # its first user turn) goes with every call.
            answer = model.chat(
                messages,
                image=image,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                return_vertices=True,
            )
        except ValueError as exc:
            messages.pop()
            print(f"error: {exc}", file=out)
            continue
        messages.append({"role": "assistant", "content": answer.text})
        answers.append(answer)
        print(f"posegpt> {answer.text}", file=out)
        for path in write_pose_files(answer, model.body, out_dir, f"turn{turn:02d}"):
            print(f"  wrote {path}", file=out)
        turn += 1
    return answers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint folder, s3:// prefix or models:/name/version"
    )
    parser.add_argument("--image", help="image file for the first turn")
    parser.add_argument(
        "--message", action="append", help="message to send (repeatable); no interactive prompt"
    )
    parser.add_argument("--out", default="outputs/chat", help="folder for the .obj and .png files")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 for greedy decoding")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ checkpoints")
    args = parser.parse_args(argv)
    setup_environment(args.cache_dir)

    from posegpt.inference import PoseGPT
    from posegpt.model.vision_input import decode_image

    image = None
    if args.image:
        try:
            image = decode_image(Path(args.image), f"--image {args.image}")
        except (ValueError, FileNotFoundError) as exc:
            parser.error(str(exc))
    model = PoseGPT.from_checkpoint(
        args.checkpoint, device=args.device, cache_dir=args.cache_dir, tracking_uri=args.tracking_uri
    )
    interactive = args.message is None and sys.stdin.isatty()
    inputs = args.message if args.message is not None else _lines(sys.stdin, interactive)
    run_chat(
        model,
        inputs,
        image=image,
        out_dir=Path(args.out),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
