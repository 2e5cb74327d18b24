"""Question and answer phrasings that turn labelled poses into conversations, in named presets.

A preset (``TemplateSet``) holds one pool of questions per pose task and the
answer forms. Two are built in:

* ``posegpt`` (the default, what every shard so far was written with): phrasings
  in the spirit of the paper's tables, written anew for this project.
* ``chatpose``: the wording of ChatPose (Feng et al., CVPR 2024). The paper's
  appendix could not be read here; its text-to-pose, image-to-pose and answer
  lists are copied from the authors' release, ``yfeng95/PoseGPT``
  ``utils/utils.py`` (commit d96b589: ``TEXT_SHORT_QUESTION_LIST``,
  ``SHORT_QUESTION_LIST``, ``ANSWER_LIST``, whose ``[SEG]`` is the pose token),
  typos included. The SPG / RPE benchmark prompt, ``"<description>, can you give
  the SMPL pose of this person?"`` answered ``"Sure, it is <POSE>."``, is the one
  the released RPE benchmark rows carry (quoted by the refined-RPE annotations,
  arXiv 2507.13314); SPG uses the same sentence without the image (the issue's
  quote; the SPG files themselves were not seen).

``expand`` picks one question and one answer per sample with
``random.Random(seed + stable_hash(sample_id))``, so a sample gets the same
phrasing in every run and on every worker, whatever the processing order; the
picks are returned as template ids for the row's ``meta``. With
``TemplateConfig.variants`` = k, the prepare job writes k rows per training
sample (ids ``<sample id>:<v>``), each with a different (question, answer) pair
of one seeded permutation, so a pose is not tied to one phrasing.

Pose-input tasks (``pose2text``, ``posediff``, ``poseedit``) mark each input pose of the
question with ``<POSE_IN>`` (``posegpt.data.schema.POSE_INPUT_TOKEN``); the row's ``poses`` list
them in the order they appear, before any answered ``<POSE>``. ``pose2text`` and ``posediff``
answer with the caption or modifier text itself, ``poseedit`` with a ``<POSE>`` answer form.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from posegpt.data.schema import IMAGE_TOKEN, POSE_INPUT_TOKEN, POSE_TOKEN

IMAGE_QUESTIONS: tuple[str, ...] = (
    "What is the SMPL pose of the person in this image?",
    "Can you estimate the 3D pose of the person shown here?",
    "Please give me the body pose of this person as SMPL parameters.",
    "How is the person in the picture holding their body? Answer with the SMPL pose.",
    "Estimate the 3D body pose of the person in the image.",
    "Look at this person and output their SMPL pose.",
    "What pose is this person in? Give it as a 3D body pose.",
)
"""``posegpt`` questions for ``image2pose`` rows (the image marker goes in front)."""

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
"""``posegpt`` questions for ``text2pose`` rows; ``{caption}`` is the description (``{caption_lower}`` starts lower-case)."""

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
"""``posegpt`` answer forms; ``{pose}`` becomes the single ``<POSE>`` token."""

SPG_QUESTIONS: tuple[str, ...] = (
    "Imagine {description_lower} What is their SMPL pose?",
    "Think of {description_lower} Generate the pose of their body.",
    "Show me the SMPL pose of {description_lower}",
    "What pose would {description_lower_noperiod} be in? Give the SMPL pose.",
    "Picture {description_lower} Please output their 3D body pose.",
    "Generate the body pose of {description_lower}",
)
"""``posegpt`` questions for ``spg`` rows (implicit descriptions: "a person proposing marriage")."""

RPE_QUESTIONS: tuple[str, ...] = (
    "There are several people in this image. What is the SMPL pose of {description_lower}",
    "Find {description_lower_noperiod} and give me their SMPL pose.",
    "Estimate the 3D pose of {description_lower}",
    "In this picture, what is the body pose of {description_lower_noperiod}?",
    "Please output the SMPL pose of {description_lower}",
    "Which pose is {description_lower_noperiod} in? Answer with the SMPL pose.",
)
"""``posegpt`` questions for ``rpe`` rows: the description picks one person of a multi-person image."""

POSE2TEXT_QUESTIONS: tuple[str, ...] = (
    "Describe this pose: {pose_in}",
    "Here is an SMPL pose: {pose_in} How is the person holding their body?",
    "{pose_in} Describe the posture of this person in words.",
    "What does the body do in this pose? {pose_in}",
    "Can you explain in words what this 3D pose looks like? {pose_in}",
    "Tell me how the person is positioned in {pose_in}.",
)
"""``pose2text`` questions: the input pose (``{pose_in}``) is to be described; the answer is the caption."""

POSEDIFF_QUESTIONS: tuple[str, ...] = (
    "How does pose {pose_a} differ from pose {pose_b}? Say what to change in the first to get the second.",
    "Here are two poses, {pose_a} and {pose_b}. What should the person in the first one do to reach the second?",
    "Compare {pose_a} with {pose_b}: how must the first pose change to become the second?",
    "Starting from {pose_a}, what changes lead to {pose_b}?",
    "What is the difference between these poses? From {pose_a} to {pose_b}.",
)
"""``posediff`` questions: pose A comes before pose B in every phrasing (their order in ``poses``);
the answer is the modifier text that turns A into B."""

POSEEDIT_QUESTIONS: tuple[str, ...] = (
    "Here is a pose: {pose_in} {caption} What is the new SMPL pose?",
    "{pose_in} Change this pose as follows: {caption}",
    "Take the pose {pose_in} and edit it: {caption}",
    "Starting from {pose_in}, {caption_lower} Give me the resulting pose.",
    "Apply this change to the pose {pose_in}: {caption}",
    "Modify {pose_in} so that {caption_lower}",
)
"""``poseedit`` questions: the input pose (``{pose_in}``) and the instruction (``{caption}``); the answer is a pose."""

TEXT_ANSWERS: tuple[str, ...] = ("{caption}",)
"""Answer of ``pose2text`` and ``posediff``: the caption or modifier text itself (what BLEU/ROUGE compare)."""

CHATPOSE_TEXT_QUESTIONS: tuple[str, ...] = (
    "I have a word description of a person's pose, can you give the SMPL pose of this person? {caption}",
    "There is a person: {caption} Please output this person's SMPL pose.",
    "{caption} Give the SMPL pose.",
    "What's the SMPL pose of this person? {caption}",
    "Use SMPL pose to describe this person's behavior. {caption}",
    "There is a person doing this: {caption} Can you use SMPL pose to describe the pose?",
    "A person is described as: {caption} Use the SMPL pose to reflect this.",
    "Human pose is described as words: {caption} The SMPL pose is?",
    "Human pose can be described as words: {caption} And it can also be described as SMPL pose format, "
    "can you output this?",
)
"""ChatPose's text-to-pose questions (``TEXT_SHORT_QUESTION_LIST`` of the authors' release)."""

CHATPOSE_IMAGE_QUESTIONS: tuple[str, ...] = (
    "Can you predict the SMPL pose of the person in this image?",
    "There is a person in the middle of the image, please output this person's SMPL pose.",
    "What is the human pose in this image? Please respond with SMPL pose.",
    "What is the person doing in this image? Please output SMPL pose.",
    "There is a person in the middle of the image, use SMPL to describe the pose.",
)
"""ChatPose's image-to-pose questions (``SHORT_QUESTION_LIST`` of the authors' release, image marker removed)."""

CHATPOSE_ANSWERS: tuple[str, ...] = (
    "It is {pose}.",
    "Sure, {pose}.",
    "Sure, it is {pose}.",
    "Sure, the SMPL pose is {pose}.",
    "{pose}.",
    "The SMPL pose is {pose}.",
    "The SMPL pose of the person is {pose}.",
    "The SMPL format of this person's pose is {pose}.",
)
"""ChatPose's answers (``ANSWER_LIST`` of the authors' release, ``[SEG]`` → ``{pose}``)."""

CHATPOSE_REASONING_QUESTIONS: tuple[str, ...] = (
    "{description_noperiod}, can you give the SMPL pose of this person?",
)
"""The SPG / RPE benchmark prompt (the RPE rows put the image marker in front)."""
CHATPOSE_REASONING_ANSWERS: tuple[str, ...] = ("Sure, it is {pose}.",)
"""The answer of the SPG / RPE benchmark rows."""

POSE_TASKS: tuple[str, ...] = ("image2pose", "text2pose", "spg", "rpe")
POSE_INPUT_TASKS: tuple[str, ...] = ("pose2text", "posediff", "poseedit")
"""Tasks whose question holds input poses (``<POSE_IN>``, see ``posegpt.data.schema.POSE_INPUT_TASKS``)."""
TASKS_WITH_IMAGE = frozenset({"image2pose", "rpe"})
PLACEHOLDERS: tuple[str, ...] = (
    "caption",
    "caption_lower",
    "description_lower",
    "description_lower_noperiod",
    "description_noperiod",
)
"""Fields a question may use (all from the row's text); answers use ``{pose}`` (and ``{caption}``)."""
POSE_PLACEHOLDERS: tuple[str, ...] = ("pose_in", "pose_a", "pose_b")
"""Input pose markers of a question, each becoming ``<POSE_IN>`` (``pose_a`` before ``pose_b``)."""
_INPUT_POOLS: dict[str, tuple[str, ...]] = {
    "pose2text": POSE2TEXT_QUESTIONS,
    "posediff": POSEDIFF_QUESTIONS,
    "poseedit": POSEEDIT_QUESTIONS,
}
_INPUT_ANSWERS: dict[str, tuple[str, ...]] = {"pose2text": TEXT_ANSWERS, "posediff": TEXT_ANSWERS}


@dataclass(frozen=True)
class TemplateSet:
    """One preset: a question pool per pose task and the answer forms (per task, else ``answers``)."""

    name: str
    questions: Mapping[str, tuple[str, ...]]
    answers: tuple[str, ...]
    task_answers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""
    """Where the wording comes from (shown in docs and errors)."""

    def answers_for(self, task: str) -> tuple[str, ...]:
        return self.task_answers.get(task, self.answers)


PRESETS: dict[str, TemplateSet] = {
    "posegpt": TemplateSet(
        "posegpt",
        {
            "image2pose": IMAGE_QUESTIONS,
            "text2pose": TEXT_QUESTIONS,
            "spg": SPG_QUESTIONS,
            "rpe": RPE_QUESTIONS,
            **_INPUT_POOLS,
        },
        ANSWERS,
        task_answers=_INPUT_ANSWERS,
        source="this project's own phrasings (in the spirit of the paper's tables)",
    ),
    "chatpose": TemplateSet(
        "chatpose",
        {
            "image2pose": CHATPOSE_IMAGE_QUESTIONS,
            "text2pose": CHATPOSE_TEXT_QUESTIONS,
            "spg": CHATPOSE_REASONING_QUESTIONS,
            "rpe": CHATPOSE_REASONING_QUESTIONS,
            # ChatPose reads no poses: the pose-input tasks keep this project's phrasings.
            **_INPUT_POOLS,
        },
        CHATPOSE_ANSWERS,
        task_answers={"spg": CHATPOSE_REASONING_ANSWERS, "rpe": CHATPOSE_REASONING_ANSWERS, **_INPUT_ANSWERS},
        source="ChatPose's released lists (yfeng95/PoseGPT utils/utils.py) and its SPG/RPE benchmark prompt; "
        "this project's phrasings for the pose-input tasks",
    ),
}
"""Template presets by name."""
DEFAULT_PRESET = "posegpt"
QUESTION_POOLS: dict[str, tuple[str, ...]] = {
    t: q for t, q in PRESETS[DEFAULT_PRESET].questions.items() if t in POSE_TASKS
}
"""The default preset's question pools (kept for callers of the single-preset API)."""


@dataclass
class TemplateConfig:
    """Which phrasings the prepare job writes, and how many per sample."""

    preset: str = DEFAULT_PRESET
    """Template set: ``posegpt`` (this project's phrasings) or ``chatpose`` (the paper's wording; see posegpt/data/templates.py)."""
    variants: int = 1
    """Rows per sample of the ``variant_splits``, each with a different (question, answer) pair; ids get ``:<v>`` when > 1."""
    variant_splits: list[str] = field(default_factory=lambda: ["train"])
    """Splits that get ``variants`` rows per sample; the others keep one row (a test gallery must not hold duplicates)."""

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"templates.preset {self.preset!r} is not one of {sorted(PRESETS)}")
        if self.variants < 1:
            raise ValueError(f"templates.variants must be >= 1, got {self.variants}")


def template_set(preset: str) -> TemplateSet:
    """The preset named ``preset`` (ValueError naming the known ones otherwise)."""
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown template preset {preset!r} (known: {sorted(PRESETS)})") from None


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
        description_noperiod=text.rstrip(" .!"),
        pose=POSE_TOKEN,
        **dict.fromkeys(POSE_PLACEHOLDERS, POSE_INPUT_TOKEN),
    )


def _check(task: str, text: str | None, sample_id: str, templates: TemplateSet) -> None:
    if task not in templates.questions:
        raise ValueError(
            f"no pose templates for task {task!r} in preset {templates.name!r} (known: {sorted(templates.questions)})"
        )
    if task != "image2pose" and not (text and text.strip()):
        raise ValueError(f"{sample_id}: task {task} needs a non-empty description")


def _conversation(
    task: str, text: str | None, templates: TemplateSet, q: int, a: int
) -> tuple[list[dict[str, str]], dict[str, str]]:
    question = _fill(templates.questions[task][q], text or "")
    if task in TASKS_WITH_IMAGE:
        question = f"{IMAGE_TOKEN}\n{question}"
    answer = _fill(templates.answers_for(task)[a], text or "")
    # The default preset keeps the ids it always wrote, so older shards' meta stays comparable.
    prefix = "" if templates.name == DEFAULT_PRESET else f"{templates.name}:"
    answer_pool = "answer" if task not in templates.task_answers else f"{task}-answer"
    ids = {"question": f"{prefix}{task}/{q}", "answer": f"{prefix}{answer_pool}/{a}"}
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], ids


def expand(
    task: str, text: str | None, sample_id: str, seed: int, preset: str = DEFAULT_PRESET
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """A two-turn conversation for one pose-answer row, and the template ids picked.

    ``text`` is the caption (``text2pose``), the implicit description (``spg``) or
    the person description (``rpe``); it is unused for ``image2pose``.
    """
    templates = template_set(preset)
    _check(task, text, sample_id, templates)
    rng = sample_rng(seed, sample_id)
    q = rng.randrange(len(templates.questions[task]))
    a = rng.randrange(len(templates.answers_for(task)))
    return _conversation(task, text, templates, q, a)


def variant_pairs(
    task: str, sample_id: str, seed: int, k: int, preset: str = DEFAULT_PRESET
) -> list[tuple[int, int]]:
    """k distinct (question, answer) index pairs for ``sample_id``: a prefix of one seeded permutation.

    Questions are spread first (pair i uses question ``perm_q[i % Q]``), so k ≤ Q
    variants never repeat a question; k is capped at Q × A, the distinct pairs.
    """
    templates = template_set(preset)
    nq, na = len(templates.questions[task]), len(templates.answers_for(task))
    rng = sample_rng(seed, f"{sample_id}#variants")
    qs, ans = list(range(nq)), list(range(na))
    rng.shuffle(qs)
    rng.shuffle(ans)
    # Round r pairs question perm_q[i] with answer perm_a[(i + r) % A]: no pair repeats across rounds.
    return [(qs[i % nq], ans[(i % nq + i // nq) % na]) for i in range(min(k, nq * na))]


def expand_variants(
    task: str, text: str | None, sample_id: str, seed: int, config: TemplateConfig, split: str
) -> list[tuple[str, list[dict[str, str]], dict[str, str]]]:
    """The rows one sample becomes: ``(sample_id, conversation, template ids)`` each.

    One row with the plain id (``expand``'s pick) unless ``split`` is one of
    ``config.variant_splits`` and ``config.variants`` > 1: then up to k rows with ids
    ``<sample_id>:<v>`` and distinct phrasings (``variant_pairs``).
    """
    templates = template_set(config.preset)
    if config.variants <= 1 or split not in config.variant_splits:
        conversation, ids = expand(task, text, sample_id, seed, config.preset)
        return [(sample_id, conversation, ids)]
    _check(task, text, sample_id, templates)
    out = []
    for v, (q, a) in enumerate(variant_pairs(task, sample_id, seed, config.variants, config.preset)):
        conversation, ids = _conversation(task, text, templates, q, a)
        out.append((f"{sample_id}:{v}", conversation, {**ids, "variant": str(v)}))
    return out


ROLE_NAMES: dict[str, str] = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}
"""LLaVA's ``from`` names → the shard's roles."""


def vqa_conversation(turns: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """LLaVA ``{from, value}`` turns → ``{role, content}`` turns, text kept as written.

    Raises ValueError for an unknown speaker; ordering and ``<image>`` placement
    are checked by ``posegpt.data.schema.validate_row``.
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


def all_template_text(
    presets: Sequence[str] = (DEFAULT_PRESET,), tasks: Sequence[str] = POSE_TASKS
) -> list[str]:
    """Every phrasing of ``presets`` for ``tasks`` with its placeholders removed (a tokenizer's training corpus).

    ``tasks`` defaults to the pose-answer tasks, the corpus tokenizers were trained on before
    the pose-input tasks existed; pass ``(*POSE_TASKS, *POSE_INPUT_TASKS)`` to include those
    (their input markers become ``<POSE_IN>``).
    """
    texts: list[str] = []
    empty = {**dict.fromkeys(PLACEHOLDERS, ""), **dict.fromkeys(POSE_PLACEHOLDERS, POSE_INPUT_TOKEN)}
    for name in presets:
        templates = template_set(name)
        pools = [
            *(q for t, q in templates.questions.items() if t in tasks),
            templates.answers,
            *(a for t, a in templates.task_answers.items() if t in tasks),
        ]
        for pool in pools:
            for template in pool:
                text = " ".join(template.format(**empty, pose=POSE_TOKEN).split())
                if text and text not in texts:
                    texts.append(text)
    return texts
