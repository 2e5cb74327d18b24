"""LLaVA-style instruction conversations about the rendered images, plus text-only ones.

Rows follow ``llava_v1_5_mix665k.json``: ``{"id", "image"?, "conversations": [{"from":
"human"|"gpt", "value"}]}``, ``<image>`` once in the first human turn of rows with an
image. Image paths are relative to the world folder (``spin/images/train/000001.jpg``).
Answers are computed from what was rendered: outfit colours, the activity, the
posture measured from the joints, which way the body faces, occluders.
Only training-split images are used, so evaluation images stay unseen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.synthetic.captioner import Posecodes, describe_codes, posture_phrase
from pipelines.synthetic.images import POSITION_PHRASES
from pipelines.synthetic.poses import ACTIVITY_BY_NAME
from pipelines.synthetic.posescript import PoseRecord

STREAM_INSTRUCTIONS = 21

POSTURE_WORDS = {
    "standing": ("standing", "standing on one leg", "lunging"),
    "sitting": ("sitting", "sitting on the ground"),
    "kneeling": ("kneeling",),
    "lying down": ("lying",),
    "squatting": ("squatting",),
}
BACKGROUND_PHRASES = {
    "gradient": "a plain background that fades from one colour to another",
    "room": "a room: a plain wall above a striped floor",
    "tiles": "a chequered pattern of tiles",
    "stripes": "a pattern of soft stripes",
    "clouds": "a blurry, cloudy texture",
}
NUMBER_WORDS = {2: "two", 3: "three"}

QA = tuple[str, str]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _are(phrase: str) -> str:
    """'is kneeling' → 'are kneeling' (for 'they' / 'someone ... when they')."""
    return "are " + phrase[3:] if phrase.startswith("is ") else phrase


def _hands_answer(codes: Posecodes) -> str:
    hh = codes.hand_height
    if codes.hands_on_hips:
        return "Both hands rest on the hips."
    if hh["left"] == hh["right"]:
        return f"Both hands are {hh['left']}." if hh["left"] != "low" else "Both hands hang low."
    parts = [
        f"the {s} hand is {hh[s]}" if hh[s] != "low" else f"the {s} hand hangs low" for s in ("left", "right")
    ]
    return parts[0][0].upper() + parts[0][1:] + " and " + parts[1] + "."


def single_image_questions(meta: dict[str, Any], rng: np.random.Generator) -> list[QA]:
    """Candidate question/answer pairs about a single-person image."""
    codes = Posecodes(**meta["codes"])
    outfit = meta["outfit"]
    act = ACTIVITY_BY_NAME[meta["activity"]]
    qas: list[QA] = [
        (
            _pick(rng, ("What colour is the person's shirt?", "What colour shirt is the person wearing?")),
            _pick(rng, (f"The shirt is {outfit['shirt']}.", f"{outfit['shirt'].capitalize()}.")),
        ),
        (
            _pick(rng, ("What colour are the person's trousers?", "What colour are the trousers?")),
            f"The trousers are {outfit['trousers']}.",
        ),
        (
            _pick(rng, ("What is the person doing?", "What activity does the image show?")),
            f"The person {act.phrase}.",
        ),
        ("Which way is the person facing?", f"The person is facing {meta['facing']}."),
        ("Where are the person's hands?", _hands_answer(codes)),
        (
            _pick(rng, ("Describe the person's pose in detail.", "Can you describe the body position?")),
            describe_codes(codes, rng, "human"),
        ),
        (
            "Is the person wearing long sleeves?",
            "Yes, the shirt has long sleeves."
            if outfit["long_sleeves"]
            else "No, the shirt has short sleeves.",
        ),
        ("What is in the background?", f"The background is {BACKGROUND_PHRASES[meta['background']]}."),
    ]
    word = _pick(rng, tuple(POSTURE_WORDS))
    yes = codes.posture in POSTURE_WORDS[word]
    qas.append(
        (f"Is the person {word}?", f"{'Yes' if yes else 'No'}, the person {posture_phrase(codes, rng)}.")
    )
    if meta["occluder"]:
        qas.append(
            (
                "Is any part of the person hidden?",
                f"Yes, part of the body is hidden behind {meta['occluder']}.",
            )
        )
    else:
        qas.append(("Is any part of the person hidden?", "No, the whole body is visible."))
    return qas


def scene_questions(scene: dict[str, Any], rng: np.random.Generator) -> list[QA]:
    """Candidate question/answer pairs about a multi-person scene."""
    people = scene["people"]
    n = len(people)
    qas: list[QA] = [
        ("How many people are in the image?", f"There are {NUMBER_WORDS.get(n, str(n))} people.")
    ]
    for p in people:
        where = POSITION_PHRASES[p["position"]]
        act = ACTIVITY_BY_NAME[p["activity"]]
        qas += [
            (f"What colour is the shirt of the person {where}?", f"It is {p['outfit']['shirt']}."),
            (f"What is the person {where} doing?", f"The person {where} {act.phrase}."),
            (f"Which person {act.phrase}?", f"The person {where}, wearing {p['outfit']['text']}."),
        ]
    tallest = max(people, key=lambda p: p["stature"])
    qas.append(
        (
            "Who is the tallest person?",
            f"The person {POSITION_PHRASES[tallest['position']]}, in the {tallest['outfit']['shirt']} shirt.",
        )
    )
    return qas


def text_questions(record: PoseRecord, rng: np.random.Generator) -> list[QA]:
    """Text-only pairs about an activity, answered with a caption of one of its poses."""
    act = record.sequence.activity
    caption = record.human[0] if record.human else record.auto[0]
    implicit = act.implicit[int(rng.integers(len(act.implicit)))]
    return [
        (
            f"What does someone's body look like when they {_are(act.phrase)}?",
            f"Here is one way it can look. {caption}",
        ),
        (
            f"Imagine this: {implicit}. What is the body doing?",
            f"Most likely the person {act.phrase}. {caption}",
        ),
    ]


def _conversation(pairs: list[QA], with_image: bool) -> list[dict[str, str]]:
    turns = []
    for k, (q, a) in enumerate(pairs):
        value = f"<image>\n{q}" if (with_image and k == 0) else q
        turns += [{"from": "human", "value": value}, {"from": "gpt", "value": a}]
    return turns


def build_instructions(
    cfg_seed: int,
    rows: int,
    text_only_fraction: float,
    singles: list[dict[str, Any]],
    scenes: list[dict[str, Any]],
    records: list[PoseRecord],
) -> list[dict[str, Any]]:
    """``rows`` LLaVA-format conversations (1–3 turns each) over training-split images and poses."""
    rng = np.random.default_rng([cfg_seed, STREAM_INSTRUCTIONS])
    train_singles = [m for m in singles if m["split"] == "train"]
    train_scenes = [s for s in scenes if s["split"] == "train"]
    train_records = [r for r in records if r.sequence.split == "train"] or records
    out: list[dict[str, Any]] = []
    for k in range(rows):
        turns = int(rng.integers(1, 4))
        has_images = bool(train_singles or train_scenes)
        if (rng.random() < text_only_fraction or not has_images) and train_records:
            rec = train_records[int(rng.integers(len(train_records)))]
            pairs = text_questions(rec, rng)
            order = rng.permutation(len(pairs))[: min(turns, len(pairs))]
            out.append(
                {"id": f"synth-{k:06d}", "conversations": _conversation([pairs[i] for i in order], False)}
            )
            continue
        if not has_images:
            break
        use_scene = bool(train_scenes) and (not train_singles or rng.random() < 0.3)
        if use_scene:
            scene = train_scenes[int(rng.integers(len(train_scenes)))]
            pairs, image = scene_questions(scene, rng), f"rpe/{scene['image']}"
        else:
            meta = train_singles[int(rng.integers(len(train_singles)))]
            pairs, image = single_image_questions(meta, rng), f"{meta['dataset']}/{meta['imgname']}"
        order = rng.permutation(len(pairs))[:turns]
        out.append(
            {
                "id": f"synth-{k:06d}",
                "image": image,
                "conversations": _conversation([pairs[i] for i in order], True),
            }
        )
    return out
