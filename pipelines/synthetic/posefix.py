"""PoseFix-style pose pairs of the synthetic world, with modifier texts, in the release's file layout.

Pairs join two PoseScript pose ids of one split: *in-sequence* pairs take both from one
sequence (as PoseFix's in-sequence pairs), the others from two sequences. The modifier,
"how to turn pose A into pose B", is written from the difference of the two poses'
measurements (``captioner.posecodes``): knee and elbow bends, hand heights, torso incline,
feet and hands apart, whole-body posture, largest change first. Only pairs with such a
difference are kept (measured on the medium world: a third of random pairs, most of them
in-sequence, had none), so about a fifth of the pairs end up in-sequence. A ``human`` share of the
pairs also gets a looser, second-person wording, as the human PoseFix texts read.

Written under ``posefix/`` with the release's names (``pipelines.sources.posefix`` reads them):
the ids file (PoseScript's mapping), ``pair_id_2_pose_ids.json``, ``{split}_{in,out}_sequence_pair_ids.json``,
``posefix_human_6157.json``, ``posefix_auto_135305.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.synthetic import captioner
from pipelines.synthetic.config import SynthConfig
from pipelines.synthetic.posescript import SPLITS, PoseRecord, canonical_joints
from pipelines.synthetic.writers import write_json
from posegpt.body.model import BodyModel

STREAM_PAIRS, STREAM_MODIFIERS = 40, 41
BEND_DEGREES = 25.0
"""Smallest change of a knee or elbow angle a modifier mentions."""
AUTO_MODIFIERS = 2
"""Automatic modifiers per pair (the release's automatic file holds several per pair)."""

_FEET = {"together": "bring the feet together", "wide apart": "spread the feet wide apart"}
_HANDS = {"together": "bring the hands together", "wide apart": "move the hands wide apart"}
_HAND_TO = {
    "above the head": "above the head",
    "at shoulder level": "to shoulder level",
    "at chest level": "to chest level",
    "by the hips": "down by the hips",
    "low": "down low",
}
_SYNONYMS = {
    "bend": ("bend", "flex"),
    "straighten": ("straighten", "extend"),
    "move": ("move", "bring", "put"),
}
"""Verb variants, so that two automatic modifiers of one pair do not always read the same."""
_UNCHANGED = (
    "Barely move: keep the same posture and only adjust the limbs slightly.",
    "Stay almost as you are, with only a slight shift of the limbs.",
    "Keep the pose nearly the same.",
)
"""Modifiers of pairs whose measurements do not differ (close frames of one sequence)."""
_TORSO = {
    "upright": "straighten the torso up",
    "leaning": "lean the torso a little",
    "bent over": "bend the torso over",
    "horizontal": "bring the torso down to horizontal",
}


def make_pairs(
    cfg: SynthConfig, records: list[PoseRecord], accept: Callable[[int, int], bool] = lambda a, b: True
) -> list[tuple[int, int]]:
    """Up to ``cfg.pose_pairs`` distinct (pose A id, pose B id), A ≠ B, both of one split, that ``accept``."""
    rng = np.random.default_rng([cfg.seed, STREAM_PAIRS])
    by_split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for r in records:
        by_split[r.sequence.split].append(r.pose_id)
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    # Bounded tries: a tiny world may hold fewer distinct pairs than asked for.
    for _ in range(20 * cfg.pose_pairs):
        if len(pairs) == cfg.pose_pairs:
            break
        a = records[int(rng.integers(len(records)))]
        if rng.random() < cfg.in_sequence_fraction:
            pool = [p for p in a.sequence.pose_ids if p != a.pose_id]
        else:
            pool = [p for p in by_split[a.sequence.split] if records[p].sequence is not a.sequence]
        if not pool:
            continue
        pair = (a.pose_id, int(pool[int(rng.integers(len(pool)))]))
        if pair not in seen and accept(*pair):
            seen.add(pair)
            pairs.append(pair)
    return pairs


def modifier_clauses(a: captioner.Posecodes, b: captioner.Posecodes) -> list[str]:
    """Imperative clauses turning pose A into pose B, largest change first (empty: no measured change)."""
    scored: list[tuple[float, str]] = []
    if a.posture != b.posture:
        scored.append((1000.0, f"go from {a.posture} to {b.posture}"))
    for side in captioner.SIDES:
        for joint, limb, angles_a, angles_b in (
            ("knee", "leg", a.knee_angle, b.knee_angle),
            ("elbow", "arm", a.elbow_angle, b.elbow_angle),
        ):
            change = angles_b[side] - angles_a[side]
            if change <= -BEND_DEGREES:
                scored.append((-change, f"bend the {side} {joint} more"))
            elif change >= BEND_DEGREES:
                scored.append((change, f"straighten the {side} {limb}"))
        if a.hand_height[side] != b.hand_height[side]:
            scored.append((60.0, f"move the {side} hand {_HAND_TO[b.hand_height[side]]}"))
    if a.torso != b.torso:
        scored.append((abs(b.torso_angle - a.torso_angle) + 30.0, _TORSO[b.torso]))
    if a.feet != b.feet:
        scored.append((40.0, _FEET.get(b.feet or "", "set the feet at hip width")))
    if a.hands != b.hands:
        scored.append((35.0, _HANDS.get(b.hands or "", "keep the hands a little apart")))
    scored.sort(key=lambda s: -s[0])
    return [text for _, text in scored]


def _vary(clause: str, rng: np.random.Generator) -> str:
    verb, _, rest = clause.partition(" ")
    options = _SYNONYMS.get(verb)
    return clause if not options else f"{options[int(rng.integers(len(options)))]} {rest}"


def write_modifier(
    a: captioner.Posecodes, b: captioner.Posecodes, rng: np.random.Generator, style: str, max_clauses: int = 4
) -> str:
    """One modifier text; ``style`` ``auto`` is terse, ``human`` is second-person and looser."""
    clauses = modifier_clauses(a, b)[:max_clauses]
    if not clauses:
        return _UNCHANGED[int(rng.integers(len(_UNCHANGED)))]
    clauses = [_vary(c, rng) for c in clauses]
    # The largest change stays first; the others come in any order.
    rest = clauses[1:]
    rng.shuffle(rest)
    clauses = [clauses[0], *rest]
    if style == "human":
        clauses = [
            c.replace(" the ", " your ", 1)
            if c.split(" ", 1)[0] in {v for vs in _SYNONYMS.values() for v in vs}
            else c
            for c in clauses
        ]
        opener = ("", "Now ", "Please ", "Okay, ")[int(rng.integers(4))]
        body = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        text = opener + body
        return text[0].upper() + text[1:] + "."
    return " ".join(c[0].upper() + c[1:] + "." for c in clauses)


def write_posefix(
    folder: Path, cfg: SynthConfig, records: list[PoseRecord], body: BodyModel
) -> dict[str, int]:
    """Write the pairs and their modifiers; counts for the world manifest (fewer pairs than asked when
    the world holds too few pairs of poses that differ)."""
    joints = canonical_joints(body, np.stack([r.canonical for r in records])) if records else []
    codes = [captioner.posecodes(jt) for jt in joints]
    # Pairs whose measurements differ: an edit the modifier can name (close frames of one sequence often do not).
    pairs = make_pairs(cfg, records, lambda a, b: bool(modifier_clauses(codes[a], codes[b])))
    pick = np.random.default_rng([cfg.seed, STREAM_MODIFIERS])
    human: dict[str, str] = {}
    auto: dict[str, list[str]] = {}
    for pair_id, (pa, pb) in enumerate(pairs):
        rng = np.random.default_rng([cfg.seed, STREAM_MODIFIERS, pair_id])
        auto[str(pair_id)] = [
            write_modifier(codes[pa], codes[pb], rng, "auto") for _ in range(AUTO_MODIFIERS)
        ]
        if pick.random() < cfg.human_fraction:
            human[str(pair_id)] = write_modifier(codes[pa], codes[pb], rng, "human")
    ids = {str(r.pose_id): ["AMASS", r.sequence.posescript_path, r.frame] for r in records}
    write_json(folder / "ids_2_dataset_sequence_and_frame_index_100k.json", ids)
    write_json(folder / "pair_id_2_pose_ids.json", [list(p) for p in pairs])
    counts: dict[str, int] = {"pairs": len(pairs), "human": len(human)}
    for split in SPLITS:
        in_split = [(k, p) for k, p in enumerate(pairs) if records[p[0]].sequence.split == split]
        inside = [k for k, (pa, pb) in in_split if records[pa].sequence is records[pb].sequence]
        outside = [k for k, (pa, pb) in in_split if records[pa].sequence is not records[pb].sequence]
        write_json(folder / f"{split}_in_sequence_pair_ids.json", inside)
        write_json(folder / f"{split}_out_sequence_pair_ids.json", outside)
        counts[split] = len(in_split)
    write_json(folder / "posefix_human_6157.json", human)
    write_json(folder / "posefix_auto_135305.json", auto)
    return counts
