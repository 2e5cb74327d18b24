"""LLaVA-1.5 conversation format, tokenisation and label masking.

The text of a conversation is LLaVA-1.5's ``v1`` template::

    <system> USER: <image>\\n<question> ASSISTANT: <answer></s>USER: <question> ASSISTANT:

The model learns (and generates) each answer as `` <answer></s>``: the labelled
span of an assistant turn starts at the space after ``ASSISTANT:`` and ends with
the end-of-sequence token, so a prompt that ends in ``ASSISTANT:`` is exactly the
prefix training saw. Labels come from character spans and the tokenizer's offset
mapping; a token that crosses a turn boundary is an error rather than a silent
off-by-one.

``<image>`` is one special token in the text; it is expanded to the number of
vision tokens the model produces for one image (576 for llava-1.5 at 336 px), as
``LlavaProcessor`` does. ``<POSE_IN>``, a pose given in a user turn, is one special
token expanded the same way, to the pose input encoder's tokens per pose
(``posegpt.model.pose_input``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IMAGE_PLACEHOLDER = "<image>"
POSE_INPUT_PLACEHOLDER = "<POSE_IN>"
"""The default ``PoseGPTModelConfig.pose_input_token`` (``posegpt.data.schema.POSE_INPUT_TOKEN``)."""
IGNORE_INDEX = -100
"""Label of positions that do not count in the loss (prompt, padding, image tokens)."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass
class Rendered:
    """A conversation as text plus the character spans of its assistant answers."""

    text: str
    assistant_spans: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Encoded:
    """Token ids of one conversation with its labels and ``<POSE>`` read-out positions."""

    input_ids: list[int]
    labels: list[int]
    pose_token_positions: list[int]
    """Index of every ``<POSE>`` token in ``input_ids`` (its pose is read at index − 1), in order."""
    image_span: tuple[int, int] | None = None
    """``[start, end)`` of the expanded image tokens, when the conversation has an image."""
    pose_input_positions: list[int] = field(default_factory=list)
    """Index of the first token of every expanded ``<POSE_IN>`` block in ``input_ids``, in order."""

    def pose_slots(self) -> list[bool]:
        """For each pose token of the conversation in text order: True for an input (``<POSE_IN>``),
        False for an answer (``<POSE>``). A row's ``poses`` lists one pose per slot."""
        marked = [(p, True) for p in self.pose_input_positions] + [
            (p, False) for p in self.pose_token_positions
        ]
        return [is_input for _, is_input in sorted(marked)]


def _field(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def normalize_messages(
    messages: Sequence[Any], *, has_image: bool, where: str
) -> tuple[str | None, list[Message]]:
    """Check a conversation and return its optional system text and its turns.

    Turns alternate ``user`` / ``assistant`` starting with ``user``; one leading
    ``system`` message may replace the default system line. ``<image>`` may appear
    once, in the first user turn; when an image is given and the text has no
    ``<image>``, it is put in front of the first user turn (``<image>\\n``).
    """
    if messages is None or len(messages) == 0:
        raise ValueError(f"{where}: the conversation is empty")
    items = list(messages)
    system: str | None = None
    if _field(items[0], "role") == "system":
        system = _field(items[0], "content")
        if not isinstance(system, str):
            raise ValueError(f"{where}: the system message content must be a string")
        items = items[1:]
    turns: list[Message] = []
    for i, item in enumerate(items):
        role, content = _field(item, "role"), _field(item, "content")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"{where}: turn {i} has role {role!r}; turns must alternate user/assistant starting with user"
            )
        if not isinstance(content, str):
            raise ValueError(f"{where}: turn {i} content must be a string, got {type(content).__name__}")
        turns.append(Message(role, content))
    if not turns:
        raise ValueError(f"{where}: the conversation has no user turn")
    placeholders = [t.content.count(IMAGE_PLACEHOLDER) for t in turns]
    if sum(placeholders) > 1 or (sum(placeholders) == 1 and placeholders[0] != 1):
        raise ValueError(f"{where}: {IMAGE_PLACEHOLDER} may appear once, in the first user turn")
    if has_image and placeholders[0] == 0:
        turns[0] = Message("user", f"{IMAGE_PLACEHOLDER}\n{turns[0].content}")
    if not has_image and placeholders[0] == 1:
        raise ValueError(f"{where}: the conversation has {IMAGE_PLACEHOLDER} but no image was given")
    return system, turns


def render(turns: Sequence[Message], *, system: str, eos_token: str, add_generation_prompt: bool) -> Rendered:
    """The ``v1`` text of ``turns`` and the spans of the assistant answers (`` answer</s>``)."""
    parts = [system, " "]
    spans: list[tuple[int, int]] = []
    length = len(system) + 1
    for turn in turns:
        if turn.role == "user":
            piece = f"USER: {turn.content} "
            parts.append(piece)
            length += len(piece)
        else:
            head = "ASSISTANT:"
            answer = f" {turn.content}{eos_token}"
            spans.append((length + len(head), length + len(head) + len(answer)))
            parts.append(head + answer)
            length += len(head) + len(answer)
    if add_generation_prompt:
        if turns[-1].role != "user":
            raise ValueError("a generation prompt needs a conversation that ends with a user turn")
        parts.append("ASSISTANT:")
    return Rendered("".join(parts), spans)


def encode(
    tokenizer: Any,
    rendered: Rendered,
    *,
    image_token_id: int,
    num_image_tokens: int,
    pose_token_id: int,
    where: str,
    pose_input_token_id: int | None = None,
    num_pose_input_tokens: int = 1,
) -> Encoded:
    """Tokenise ``rendered``; label only the assistant spans; expand ``<image>`` to the vision tokens and each
    ``<POSE_IN>`` (``pose_input_token_id``; None: the model reads no poses) to ``num_pose_input_tokens``."""
    if pose_input_token_id is None and POSE_INPUT_PLACEHOLDER in rendered.text:
        raise ValueError(
            f"{where}: the conversation holds {POSE_INPUT_PLACEHOLDER} but this model reads no poses "
            "(its checkpoint predates pose inputs, or model.pose_input_tokens is 0)"
        )
    enc = tokenizer(rendered.text, add_special_tokens=True, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    labelled = [False] * len(ids)
    for start, end in rendered.assistant_spans:
        for i, (s, e) in enumerate(offsets):
            if e <= s:
                continue  # added specials such as BOS carry an empty span
            inside = s >= start and e <= end
            crosses = s < start < e or s < end < e
            if crosses:
                piece = rendered.text[s:e]
                raise ValueError(
                    f"{where}: token {piece!r} crosses the boundary of an assistant turn; "
                    "the tokenizer merges text across turns, labels would be off"
                )
            if inside:
                labelled[i] = True

    out_ids: list[int] = []
    labels: list[int] = []
    poses: list[int] = []
    image_span: tuple[int, int] | None = None
    pose_inputs: list[int] = []
    for token, is_label in zip(ids, labelled, strict=True):
        if token == image_token_id:
            image_span = (len(out_ids), len(out_ids) + num_image_tokens)
            out_ids.extend([image_token_id] * num_image_tokens)
            labels.extend([IGNORE_INDEX] * num_image_tokens)
            continue
        if token == pose_input_token_id:
            if is_label:
                raise ValueError(
                    f"{where}: {POSE_INPUT_PLACEHOLDER} appears in an assistant turn; poses are given in user turns"
                )
            pose_inputs.append(len(out_ids))
            out_ids.extend([token] * num_pose_input_tokens)
            labels.extend([IGNORE_INDEX] * num_pose_input_tokens)
            continue
        if token == pose_token_id:
            if not is_label:
                raise ValueError(f"{where}: <POSE> appears outside an assistant turn; poses are only answers")
            poses.append(len(out_ids))
        out_ids.append(token)
        labels.append(token if is_label else IGNORE_INDEX)
    return Encoded(out_ids, labels, poses, image_span, pose_inputs)
