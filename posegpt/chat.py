"""Terminal chat with a PoseGPT checkpoint; every pose is written as ``.obj`` and ``.png``.

    python -m posegpt.chat --checkpoint outputs/train/checkpoint [--image person.jpg]
    python -m posegpt.chat --checkpoint DIR --message "Show me a person doing a lunge."   # one turn, no prompt

Type a message and press enter; ``/reset`` starts a new conversation, ``/quit`` (or
end of input) leaves. The image, when given, belongs to the first turn of every conversation.

Poses as input: every pose of the session is numbered (``--pose`` files first, then each
answered pose, printed as ``pose #k``). In a message, ``<POSE_IN#k>`` gives the model pose k
and ``<POSE_IN>`` the latest one, so an answered pose can be edited next::

    you> Show me a person doing a lunge.
    posegpt> Here is the pose <POSE>.   (pose #1)
    you> <POSE_IN> Now raise the left arm.
"""

from __future__ import annotations

import argparse
import re
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


POSE_REFERENCE = re.compile(r"<POSE_IN(?:#(\d+))?>")
"""``<POSE_IN>`` (the latest pose of the session) or ``<POSE_IN#k>`` (pose k, numbered from 1)."""


def resolve_pose_references(text: str, session_poses: Sequence[Any]) -> tuple[str, list[Any]]:
    """``text`` with every reference turned into ``<POSE_IN>``, and the poses they name, in order."""
    poses = []
    for match in POSE_REFERENCE.finditer(text):
        number = int(match.group(1)) if match.group(1) else len(session_poses)
        if not 1 <= number <= len(session_poses):
            have = f"poses #1 to #{len(session_poses)}" if session_poses else "no pose yet"
            raise ValueError(f"{match.group(0)} names pose #{number}, but the session has {have}")
        poses.append(session_poses[number - 1])
    return POSE_REFERENCE.sub("<POSE_IN>", text), poses


def read_pose_file(path: Path) -> Any:
    """72 axis-angle floats from a ``.npy`` or a JSON list."""
    import json

    import numpy as np

    if not path.is_file():
        raise ValueError(f"pose file {path} does not exist")
    values = np.load(path) if path.suffix == ".npy" else np.asarray(json.loads(path.read_text()), np.float32)
    return np.asarray(values, np.float32).reshape(-1)


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
    poses: Sequence[Any] = (),
) -> list[Any]:
    """Answer each line of ``inputs`` in one conversation; returns the answers. ``poses`` are the
    session's first poses (#1...), which messages can give the model as ``<POSE_IN#k>``."""
    messages: list[dict[str, str]] = []
    given: list[Any] = []  # the poses of the conversation's <POSE_IN>, in order
    session_poses: list[Any] = list(poses)
    answers = []
    turn = 0
    for line in inputs:
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            messages, given, turn = [], [], turn + 1
            print("(new conversation)", file=out)
            continue
        try:
            text, referenced = resolve_pose_references(text, session_poses)
            # The whole conversation is encoded again each turn, so the image (which sits in
            # its first user turn) and the earlier turns' input poses go with every call.
            answer = model.chat(
                [*messages, {"role": "user", "content": text}],
                image=image,
                poses=[*given, *referenced],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                return_vertices=True,
            )
        except ValueError as exc:
            print(f"error: {exc}", file=out)
            continue
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer.text}]
        given += referenced
        answers.append(answer)
        numbers = range(len(session_poses) + 1, len(session_poses) + len(answer.poses) + 1)
        session_poses += list(answer.poses)
        numbered = f"   ({', '.join(f'pose #{k}' for k in numbers)})" if len(numbers) else ""
        print(f"posegpt> {answer.text}{numbered}", file=out)
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
        "--pose",
        action="append",
        default=[],
        help="pose file (.npy or JSON list of 72 axis-angle floats), repeatable: poses #1, #2, ... for <POSE_IN#k>",
    )
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
    try:
        poses = [read_pose_file(Path(p)) for p in args.pose]
    except ValueError as exc:
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
        poses=poses,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
