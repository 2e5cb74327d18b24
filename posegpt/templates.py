"""Question and answer phrasings that turn labelled poses into conversations.

Each task has its own pool of phrasings (in the spirit of the PoseGPT/ChatPose
paper's tables, written anew). ``expand`` picks one question and one answer per
sample with ``random.Random(seed + stable_hash(sample_id))``, so a sample gets the
same phrasing in every run and on every worker, whatever the processing order;
the picks are returned as template ids for the row's ``meta``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

from posegpt.schema import IMAGE_TOKEN, POSE_TOKEN

IMAGE_QUESTIONS: tuple[str, ...] = (
    "What is the SMPL pose of the person in this image?",
    "Can you estimate the 3D pose of the person shown here?",
    "Please give me the body pose of this person as SMPL parameters.",
    "How is the person in the picture holding their body? Answer with the SMPL pose.",
    "Estimate the 3D body pose of the person in the image.",
    "Look at this person and output their SMPL pose.",
    "What pose is this person in? Give it as a 3D body pose.",
)
"""Questions for ``image2pose`` rows (the image marker goes in front)."""

TEXT_QUESTIONS: tuple[str, ...] = (
    "Generate the SMPL pose of this description: {caption}",
    "Here is a description of a person: {caption} Can you give me the SMPL pose?",
    "Create a 3D body pose that matches the following text. {caption}",
    "{caption} What is the SMPL pose of this person?",
    "Please output the body pose described here: {caption}",
    "Can you show me a pose where {caption_lower}",
    "I will describe a posture, please turn it into SMPL parameters. {caption}",
    "Give the 3D human pose for: {caption}",
    "Read this and produce the matching SMPL pose. {caption}",
    "What would the body look like? {caption} Answer with the SMPL pose.",
)
"""Questions for ``text2pose`` rows; ``{caption}`` is the description (``{caption_lower}`` starts lower-case)."""

ANSWERS: tuple[str, ...] = (
    "Sure, here is the SMPL pose: {pose}.",
    "Here is the pose {pose}.",
    "The SMPL pose is {pose}.",
    "Of course. {pose}",
    "This is the body pose: {pose}.",
    "Sure, it is {pose}.",
    "The person's pose is {pose}.",
    "Here you go: {pose}.",
    "I think the pose is {pose}.",
)
"""Answer forms; ``{pose}`` becomes the single ``<POSE>`` token."""

SPG_QUESTIONS: tuple[str, ...] = (
    "Imagine {description_lower} What is their SMPL pose?",
    "Think of {description_lower} Generate the pose of their body.",
    "Show me the SMPL pose of {description_lower}",
    "What pose would {description_lower_noperiod} be in? Give the SMPL pose.",
    "Picture {description_lower} Please output their 3D body pose.",
    "Generate the body pose of {description_lower}",
)
"""Questions for ``spg`` rows (implicit descriptions: "a person proposing marriage")."""

RPE_QUESTIONS: tuple[str, ...] = (
    "There are several people in this image. What is the SMPL pose of {description_lower}",
    "Find {description_lower_noperiod} and give me their SMPL pose.",
    "Estimate the 3D pose of {description_lower}",
    "In this picture, what is the body pose of {description_lower_noperiod}?",
    "Please output the SMPL pose of {description_lower}",
    "Which pose is {description_lower_noperiod} in? Answer with the SMPL pose.",
)
"""Questions for ``rpe`` rows: the description picks one person of a multi-person image."""

QUESTION_POOLS: dict[str, tuple[str, ...]] = {
    "image2pose": IMAGE_QUESTIONS,
    "text2pose": TEXT_QUESTIONS,
    "spg": SPG_QUESTIONS,
    "rpe": RPE_QUESTIONS,
}
TASKS_WITH_IMAGE = frozenset({"image2pose", "rpe"})


def stable_hash(text: str) -> int:
    """A 63-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def sample_rng(seed: int, sample_id: str) -> random.Random:
    """The generator of one sample's template picks."""
    return random.Random(seed + stable_hash(sample_id))


def _lower_first(text: str) -> str:
    text = text.strip()
    # "The person ..." → "the person ...", but keep "I"/acronyms such as "SMPL" as written.
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


def _fill(template: str, text: str) -> str:
    text = " ".join(text.split())
    lower = _lower_first(text)
    return template.format(
        caption=text,
        caption_lower=lower,
        description_lower=lower,
        description_lower_noperiod=lower.rstrip(" .!"),
    )


def expand(
    task: str, text: str | None, sample_id: str, seed: int
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """A two-turn conversation for one pose-answer row, and the template ids picked.

    ``text`` is the caption (``text2pose``), the implicit description (``spg``) or
    the person description (``rpe``); it is unused for ``image2pose``.
    """
    if task not in QUESTION_POOLS:
        raise ValueError(f"no pose templates for task {task!r} (known: {sorted(QUESTION_POOLS)})")
    if task != "image2pose" and not (text and text.strip()):
        raise ValueError(f"{sample_id}: task {task} needs a non-empty description")
    rng = sample_rng(seed, sample_id)
    pool = QUESTION_POOLS[task]
    q = rng.randrange(len(pool))
    a = rng.randrange(len(ANSWERS))
    question = _fill(pool[q], text or "")
    if task in TASKS_WITH_IMAGE:
        question = f"{IMAGE_TOKEN}\n{question}"
    answer = ANSWERS[a].format(pose=POSE_TOKEN)
    conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return conversation, {"question": f"{task}/{q}", "answer": f"answer/{a}"}


ROLE_NAMES: dict[str, str] = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}
"""LLaVA's ``from`` names → the shard's roles."""


def vqa_conversation(turns: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """LLaVA ``{from, value}`` turns → ``{role, content}`` turns, text kept as written.

    Raises ValueError for an unknown speaker; ordering and ``<image>`` placement
    are checked by ``posegpt.schema.validate_row``.
    """
    out = []
    for i, turn in enumerate(turns):
        speaker = turn.get("from")
        if speaker not in ROLE_NAMES:
            raise ValueError(f"turn {i} has unknown speaker {speaker!r} (expected human or gpt)")
        value = turn.get("value")
        if not isinstance(value, str):
            raise ValueError(f"turn {i} has no text value")
        out.append({"role": ROLE_NAMES[speaker], "content": value})
    return out


def all_template_text() -> list[str]:
    """Every phrasing with its placeholders removed (a tokenizer's training corpus)."""
    texts = []
    for pool in (*QUESTION_POOLS.values(), ANSWERS):
        for template in pool:
            texts.append(
                " ".join(
                    template.format(
                        caption="",
                        caption_lower="",
                        description_lower="",
                        description_lower_noperiod="",
                        pose=POSE_TOKEN,
                    ).split()
                )
            )
    return texts
