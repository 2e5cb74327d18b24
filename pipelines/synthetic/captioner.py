"""A rule-based pose captioner in the spirit of PoseScript's posecodes.

``posecodes(joints)`` measures a pose from its 24 SMPL joints (canonical frame,
y up; any root orientation): knee and elbow angles, torso incline, hand and foot
positions relative to the body, distances between hands and between feet,
kneeling and contact with the ground, lying. ``describe`` turns those
measurements into a sentence, with random choices of which facts to state, in
which order and with which words; ``style="human"`` writes the fuller, more
fluent kind of caption the human-annotated subset stands in for.

Sides are the body's own: "left" is the subject's left (SMPL's +x in the rest
pose), whichever way the body faces the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from posegpt.body.skeleton import JOINT_INDEX

J = JOINT_INDEX
SIDES = ("left", "right")

# Category edges (degrees / metres), chosen so the activity library's poses fall clearly on one side.
STRAIGHT_MIN, SLIGHT_MIN, RIGHT_ANGLE_MIN = 155.0, 125.0, 65.0
NEAR_GROUND = 0.15
HANDS_TOGETHER, HANDS_WIDE = 0.18, 1.1
FEET_TOGETHER, FEET_WIDE = 0.16, 0.5


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Angle at ``b`` (degrees) between ``a - b`` and ``c - b``."""
    u, v = a - b, c - b
    cos = float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-9))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def bend_category(angle: float) -> str:
    """Joint angle (180 = straight) → ``straight`` / ``slightly bent`` / ``bent`` / ``completely bent``."""
    if angle >= STRAIGHT_MIN:
        return "straight"
    if angle >= SLIGHT_MIN:
        return "slightly bent"
    if angle >= RIGHT_ANGLE_MIN:
        return "bent"
    return "completely bent"


POSTURES = (
    "lying",
    "push-up",
    "bent over",
    "kneeling",
    "squatting",
    "sitting on the ground",
    "sitting",
    "lunging",
    "standing on one leg",
    "standing",
)
"""Whole-body postures, tested in this order (the first that fits wins)."""


@dataclass
class Posecodes:
    """Measurements of one pose; categories are strings so captions and tests read the same words."""

    posture: str
    """One of ``POSTURES``."""
    knee: dict[str, str]
    knee_angle: dict[str, float]
    elbow: dict[str, str]
    elbow_angle: dict[str, float]
    torso: str
    """``upright``, ``leaning``, ``bent over`` or ``horizontal`` (angle of pelvis→neck from vertical)."""
    torso_angle: float
    lying: str | None
    """``on the back``, ``face down``, ``on the side`` for lying poses, else None."""
    hand_height: dict[str, str]
    """``above the head``, ``at shoulder level``, ``at chest level``, ``by the hips``, ``low`` (body frame)."""
    hand_forward: dict[str, bool]
    hand_side: dict[str, bool]
    hands_distance: float
    hands: str | None
    """``together``, ``wide apart`` or None."""
    feet_distance: float
    feet: str | None
    """``together``, ``wide apart`` or None."""
    foot_front: str | None
    """The side whose foot is clearly ahead of the other (body frame), or None."""
    thigh_raised: dict[str, bool]
    """Thigh pointing forward (body frame): more than ~50° from hanging down."""
    knee_on_ground: dict[str, bool]
    foot_raised: str | None
    """The side whose foot is clearly off the ground while the other carries the body."""
    hands_on_hips: bool
    arm_down: dict[str, bool]
    """The wrist well below the shoulder in the world (an arm hanging or reaching down)."""


def _body_frame(joints: np.ndarray) -> np.ndarray:
    """Rows: the body's left, up (pelvis → neck) and forward axes."""
    left = joints[J["left_hip"]] - joints[J["right_hip"]]
    up = joints[J["neck"]] - joints[J["pelvis"]]
    left = left / np.linalg.norm(left)
    up = up - (up @ left) * left
    up = up / np.linalg.norm(up)
    forward = np.cross(left, up)
    return np.stack([left, up, forward])


def posecodes(joints: np.ndarray) -> Posecodes:
    """Measure one pose from its (24, 3) joints in a y-up frame (metres); the lowest joint is the ground."""
    jt = np.asarray(joints, dtype=np.float64)
    if jt.shape != (24, 3) or not np.isfinite(jt).all():
        raise ValueError(f"joints must be a finite (24, 3) array, got shape {jt.shape}")
    frame = _body_frame(jt)
    local = (jt - jt[J["pelvis"]]) @ frame.T  # x: body left, y: body up, z: body forward
    height = jt[:, 1] - jt[:, 1].min()
    world_up = np.array([0.0, 1.0, 0.0])

    knee_angle = {s: _angle(jt[J[f"{s}_hip"]], jt[J[f"{s}_knee"]], jt[J[f"{s}_ankle"]]) for s in SIDES}
    elbow_angle = {s: _angle(jt[J[f"{s}_shoulder"]], jt[J[f"{s}_elbow"]], jt[J[f"{s}_wrist"]]) for s in SIDES}

    spine = jt[J["neck"]] - jt[J["pelvis"]]
    torso_angle = math.degrees(math.acos(float(np.clip(spine @ world_up / np.linalg.norm(spine), -1, 1))))
    torso = (
        "upright"
        if torso_angle < 22
        else "leaning"
        if torso_angle < 45
        else "bent over"
        if torso_angle < 70
        else "horizontal"
    )
    facing = float(frame[2] @ world_up)

    head_y, pelvis_y = local[J["head"], 1], local[J["pelvis"], 1]
    hand_height: dict[str, str] = {}
    hand_forward: dict[str, bool] = {}
    hand_side: dict[str, bool] = {}
    for s in SIDES:
        w, sh = local[J[f"{s}_wrist"]], local[J[f"{s}_shoulder"]]
        if w[1] > head_y + 0.02:
            hand_height[s] = "above the head"
        elif abs(w[1] - sh[1]) < 0.12:
            hand_height[s] = "at shoulder level"
        elif w[1] > sh[1] - 0.3:
            hand_height[s] = "at chest level"
        elif w[1] > pelvis_y - 0.15:
            hand_height[s] = "by the hips"
        else:
            hand_height[s] = "low"
        hand_forward[s] = bool(w[2] - sh[2] > 0.3)
        hand_side[s] = bool(abs(w[0]) - abs(sh[0]) > 0.3)

    hands_distance = float(np.linalg.norm(jt[J["left_wrist"]] - jt[J["right_wrist"]]))
    hands = (
        "together"
        if hands_distance < HANDS_TOGETHER
        else "wide apart"
        if hands_distance > HANDS_WIDE
        else None
    )
    feet_distance = float(np.linalg.norm(jt[J["left_ankle"]] - jt[J["right_ankle"]]))
    feet = (
        "together" if feet_distance < FEET_TOGETHER else "wide apart" if feet_distance > FEET_WIDE else None
    )
    dz = local[J["left_ankle"], 2] - local[J["right_ankle"], 2]
    foot_front = "left" if dz > 0.25 else "right" if dz < -0.25 else None

    thigh_raised, thigh_back, thigh_down = {}, {}, {}
    for s in SIDES:
        thigh = local[J[f"{s}_knee"]] - local[J[f"{s}_hip"]]
        thigh = thigh / np.linalg.norm(thigh)
        thigh_raised[s] = bool(thigh[2] > 0.75)
        thigh_back[s] = bool(thigh[2] < -0.4)
        thigh_down[s] = bool(thigh[1] < -0.7)
    upright_body = torso_angle < 45
    # A knee on the ground under a thigh that hangs down (not a leg lying flat on the floor).
    knee_on_ground = {
        s: bool(upright_body and thigh_down[s] and height[J[f"{s}_knee"]] < NEAR_GROUND) for s in SIDES
    }
    dy = height[J["left_ankle"]] - height[J["right_ankle"]]
    foot_raised = "left" if dy > 0.25 else "right" if dy < -0.25 else None
    # A hand on the hip: the wrist beside the pelvis (body frame), reached with a bent elbow.
    hands_on_hips = all(
        -0.15 < local[J[f"{s}_wrist"], 1] < 0.2
        and 0.1 < abs(local[J[f"{s}_wrist"], 0]) < 0.32
        and abs(local[J[f"{s}_wrist"], 2]) < 0.15
        and elbow_angle[s] < SLIGHT_MIN
        for s in SIDES
    )
    # Arms hanging towards the floor (world vertical), whatever the torso does.
    arm_down = {s: bool(height[J[f"{s}_shoulder"]] - height[J[f"{s}_wrist"]] > 0.35) for s in SIDES}

    lying = None
    low_pelvis = height[J["pelvis"]]
    if torso_angle >= 50 and low_pelvis < 0.55:
        # Held up on the hands: shoulders off the floor, both wrists well below them.
        wrists_top = max(height[J["left_wrist"]], height[J["right_wrist"]])
        shoulders = min(height[J["left_shoulder"]], height[J["right_shoulder"]])
        if facing < -0.5 and shoulders > 0.35 and shoulders - wrists_top > 0.3:
            posture = "push-up"
        else:
            posture = "lying"
            lying = "on the back" if facing > 0.5 else "face down" if facing < -0.5 else "on the side"
    elif torso_angle >= 45:
        posture = "bent over"
    elif any(knee_on_ground.values()):
        posture = "kneeling"
    elif all(knee_angle[s] < 72 for s in SIDES) and foot_raised is None:
        posture = "squatting"
    elif low_pelvis < 0.3:
        posture = "sitting on the ground"
    elif all(thigh_raised.values()) and foot_raised is None:
        posture = "sitting"
    elif (
        foot_front
        and thigh_back[_other(foot_front)]
        and knee_angle[foot_front] < SLIGHT_MIN
        and foot_raised is None
    ):
        posture = "lunging"
    elif foot_raised is not None:
        posture = "standing on one leg"
    else:
        posture = "standing"
    if posture not in ("standing", "standing on one leg", "kneeling", "lunging"):
        foot_raised = None
    return Posecodes(
        posture=posture,
        knee={s: bend_category(knee_angle[s]) for s in SIDES},
        knee_angle=knee_angle,
        elbow={s: bend_category(elbow_angle[s]) for s in SIDES},
        elbow_angle=elbow_angle,
        torso=torso,
        torso_angle=torso_angle,
        lying=lying,
        hand_height=hand_height,
        hand_forward=hand_forward,
        hand_side=hand_side,
        hands_distance=hands_distance,
        hands=hands,
        feet_distance=feet_distance,
        feet=feet,
        foot_front=foot_front,
        thigh_raised=thigh_raised,
        knee_on_ground=knee_on_ground,
        foot_raised=foot_raised,
        hands_on_hips=bool(hands_on_hips),
        arm_down=arm_down,
    )


_SUBJECTS = ("the person", "the figure", "someone", "this person", "the subject", "the body")
_BEND_WORDS = {
    "straight": ("straight", "extended", "stretched out"),
    "slightly bent": ("slightly bent", "a little bent", "barely bent"),
    "bent": ("bent", "bent at about a right angle", "flexed"),
    "completely bent": ("completely bent", "fully bent", "sharply bent"),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def posture_phrase(pc: Posecodes, rng: np.random.Generator) -> str:
    """A verb phrase for the whole body: "is kneeling on both knees"."""
    p = pc.posture
    if p == "lying":
        return _pick(
            rng, (f"is lying {pc.lying}", f"lies {pc.lying} on the ground", f"is stretched out {pc.lying}")
        )
    if p == "push-up":
        return _pick(
            rng,
            (
                "is in a push-up position",
                "is face down, supported on the hands",
                "holds a plank on straight arms",
            ),
        )
    if p == "bent over":
        return _pick(rng, ("is bent forward at the waist", "is bending over", "leans far forward"))
    if p == "kneeling":
        kneel = [s for s in SIDES if pc.knee_on_ground[s]]
        if len(kneel) == 2:
            return _pick(
                rng, ("is kneeling on both knees", "is on both knees", "kneels with both knees on the ground")
            )
        return _pick(
            rng,
            (
                f"is kneeling on the {kneel[0]} knee",
                f"is down on the {kneel[0]} knee",
                f"kneels on one knee, the {kneel[0]} one",
            ),
        )
    if p == "sitting on the ground":
        return _pick(rng, ("is sitting on the ground", "is seated on the floor", "sits on the ground"))
    if p == "squatting":
        return _pick(rng, ("is squatting", "is crouching down", "squats low"))
    if p == "lunging":
        return _pick(
            rng,
            (
                f"is lunging forward on the {pc.foot_front} leg",
                f"is in a lunge with the {pc.foot_front} foot forward",
            ),
        )
    if p == "sitting":
        return _pick(
            rng,
            (
                "is sitting as if on a chair",
                "is seated with the thighs horizontal",
                "sits on an invisible chair",
            ),
        )
    if p == "standing on one leg":
        return _pick(
            rng,
            (
                f"is standing on the {_other(pc.foot_raised or 'left')} leg",
                f"balances on the {_other(pc.foot_raised or 'left')} foot",
            ),
        )
    if pc.torso == "leaning":
        return _pick(
            rng, ("is standing, leaning slightly forward", "stands with the torso a little inclined")
        )
    return _pick(rng, ("is standing", "stands upright", "is standing up straight"))


def _limb_clause(rng: np.random.Generator, codes: dict[str, str], limb: str, plural: str) -> str:
    """'both knees are bent' or 'the left knee is straight while the right one is bent'."""
    if codes["left"] == codes["right"]:
        word = _pick(rng, _BEND_WORDS[codes["left"]])
        return _pick(
            rng, (f"both {plural} are {word}", f"the {plural} are both {word}", f"the {plural} are {word}")
        )
    first = _pick(rng, SIDES)
    second = _other(first)
    a, b = _pick(rng, _BEND_WORDS[codes[first]]), _pick(rng, _BEND_WORDS[codes[second]])
    return _pick(
        rng,
        (
            f"the {first} {limb} is {a} while the {second} {limb} is {b}",
            f"the {first} {limb} is {a} and the {second} one is {b}",
            f"the {first} {limb} is {a}, the {second} {limb} {b}",
        ),
    )


Clause = tuple[str, bool]
"""A caption clause and whether it is essential (automatic captions always keep those)."""

_TILTED = ("bent over", "push-up", "lying")


def leg_clauses(pc: Posecodes, rng: np.random.Generator) -> list[Clause]:
    out = [(_limb_clause(rng, pc.knee, "knee", "knees"), True)]
    if pc.posture not in ("sitting", "sitting on the ground", "squatting", *_TILTED):
        for s in SIDES:
            if pc.thigh_raised[s]:
                out.append(
                    (
                        _pick(rng, (f"the {s} thigh is raised forward", f"the {s} leg is lifted in front")),
                        True,
                    )
                )
    if pc.foot_raised and pc.posture != "standing on one leg":
        text = _pick(
            rng, (f"the {pc.foot_raised} foot is off the ground", f"the {pc.foot_raised} foot is lifted")
        )
        out.append((text, True))
    if pc.feet == "together":
        out.append((_pick(rng, ("the feet are close together", "the feet are together")), False))
    elif pc.feet == "wide apart":
        out.append((_pick(rng, ("the feet are wide apart", "the legs are spread apart")), False))
    if pc.foot_front and pc.posture not in _TILTED:
        other = _other(pc.foot_front)
        text = _pick(
            rng,
            (
                f"the {pc.foot_front} foot is in front of the {other} one",
                f"the {pc.foot_front} foot is ahead",
            ),
        )
        out.append((text, False))
    return out


def arm_clauses(pc: Posecodes, rng: np.random.Generator) -> list[Clause]:
    out = [(_limb_clause(rng, pc.elbow, "elbow", "elbows"), True)]
    hh = pc.hand_height
    if pc.posture in ("bent over", "push-up"):
        # Heights along a tilted torso mislead: say where the arms point in the world instead.
        down = [s for s in SIDES if pc.arm_down[s]]
        if len(down) == 2:
            out.append(
                (
                    _pick(rng, ("both arms hang down towards the floor", "the arms reach down to the floor")),
                    True,
                )
            )
        elif down:
            out.append((f"the {down[0]} arm hangs down towards the floor", True))
    elif pc.hands_on_hips:
        out.append((_pick(rng, ("both hands rest on the hips", "the hands are on the hips")), True))
    elif hh["left"] == hh["right"] and hh["left"] in (
        "above the head",
        "at shoulder level",
        "at chest level",
    ):
        out.append((_pick(rng, (f"both hands are {hh['left']}", f"the hands are raised {hh['left']}")), True))
    else:
        for s in SIDES:
            if hh[s] in ("above the head", "at shoulder level", "at chest level"):
                out.append(
                    (_pick(rng, (f"the {s} hand is {hh[s]}", f"the {s} hand is raised {hh[s]}")), True)
                )
    for s in SIDES:
        if pc.hand_forward[s] and pc.posture not in _TILTED:
            out.append(
                (
                    _pick(rng, (f"the {s} arm reaches forward", f"the {s} arm is stretched out in front")),
                    False,
                )
            )
        if pc.hand_side[s]:
            out.append(
                (_pick(rng, (f"the {s} arm is extended to the side", f"the {s} arm points sideways")), False)
            )
    if pc.hands == "together":
        out.append((_pick(rng, ("the hands are close together", "the hands almost touch")), False))
    elif pc.hands == "wide apart":
        out.append((_pick(rng, ("the hands are far apart", "the hands are spread wide")), False))
    return out


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _join(clauses: list[str], rng: np.random.Generator) -> str:
    """Clauses into one sentence: "a, b and c" or "a while b"."""
    if len(clauses) == 1:
        return clauses[0]
    if len(clauses) == 2:
        return f"{clauses[0]}{_pick(rng, (' and ', ', and ', '; '))}{clauses[1]}"
    return ", ".join(clauses[:-1]) + " and " + clauses[-1]


def describe(joints: np.ndarray, rng: np.random.Generator, style: str = "auto") -> str:
    """One caption of the pose given by its (24, 3) joints (see ``describe_codes``)."""
    return describe_codes(posecodes(joints), rng, style)


def describe_codes(pc: Posecodes, rng: np.random.Generator, style: str = "auto") -> str:
    """One caption of a measured pose.

    ``auto``: the posture, then the leg and arm facts in random order, one short
    sentence each: every essential fact, and each minor one (feet apart, an arm
    forward) with probability 0.6. ``human``: every fact, grouped into longer
    sentences with connectives. Either way the posture is always stated.
    """
    if style not in ("auto", "human"):
        raise ValueError(f"style must be 'auto' or 'human', got {style!r}")
    subject = _pick(rng, _SUBJECTS)
    posture = posture_phrase(pc, rng)
    legs, arms = leg_clauses(pc, rng), arm_clauses(pc, rng)
    pairs = [legs, arms] if rng.random() < 0.5 else [arms, legs]
    if style == "human":
        groups = [[text for text, _ in group] for group in pairs]
        opener = f"{_cap(subject)} {posture}"
        first = groups[0]
        link = _pick(rng, (": ", "; ", ", and "))
        sentences = [f"{opener}{link}{_join(first[:2], rng)}."]
        rest = first[2:] + groups[1]
        for i in range(0, len(rest), 3):
            sentences.append(_cap(_join(rest[i : i + 3], rng)) + ".")
        return " ".join(sentences)
    sentences = [f"{_cap(subject)} {posture}."]
    for group in pairs:
        kept = [text for text, essential in group if essential or rng.random() < 0.6]
        rng.shuffle(kept)
        sentences += [_cap(c) + "." for c in kept]
    return " ".join(sentences)
