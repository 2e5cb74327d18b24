"""AMASS "SMPL+H G" sequences: folder-name aliases, SMPL-H → SMPL, and the frame convention.

PoseScript names sequences by AMASS's older folder names (``BioMotionLab_NTroje``)
while today's AMASS download uses new ones (``BMLrub``): ``resolve_sequence``
tries both. ``smplh_to_smpl`` keeps the first 22 joints (SMPL-H joints 22-23 are
finger joints, not SMPL's hands), sets SMPL's two hand joints to identity, and
turns the z-up root into the camera-frame convention of image data (DESIGN.md:
zero the yaw, then ``Rx(+90°)``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from pipelines.sources.inputs import RawFileError, ReadContext, resolve
from posegpt.body.skeleton import AMASS_BODY_JOINTS, POSE_DIM
from posegpt.geometry import zup_root_to_camera_frame

AMASS_ALIASES: dict[str, str] = {
    "BioMotionLab_NTroje": "BMLrub",
    "MPI_HDM05": "HDM05",
    "MPI_Limits": "PosePrior",
    "DFaust_67": "DFaust",
    "SSM_synced": "SSM",
    "MPI_mosh": "MoSh",
    "Transitions_mocap": "Transitions",
    "TCD_handMocap": "TCDHands",
    "Eyes_Japan_Dataset": "EyesJapanDataset",
    "BMLhandball": "BMLhandball",
    "BMLmovi": "BMLmovi",
    "ACCAD": "ACCAD",
    "CMU": "CMU",
    "KIT": "KIT",
    "EKUT": "EKUT",
    "HumanEva": "HumanEva",
    "SFU": "SFU",
    "TotalCapture": "TotalCapture",
    "DanceDB": "DanceDB",
}
"""AMASS folder names as PoseScript (and AMASS before 2021) wrote them → today's names."""

_BOTH_WAYS: dict[str, str] = {**AMASS_ALIASES, **{new: old for old, new in AMASS_ALIASES.items()}}


def alias_candidates(rel: str) -> list[str]:
    """``rel`` and the same path under the other name of its first folder (old ↔ new)."""
    rel = rel.strip("/")
    head, _, rest = rel.partition("/")
    out = [rel]
    other = _BOTH_WAYS.get(head)
    if other and other != head and rest:
        out.append(f"{other}/{rest}")
    return out


def smplh_to_smpl(poses: np.ndarray) -> np.ndarray:
    """(T, ≥66) SMPL-H axis-angle in AMASS's z-up world → (T, 72) SMPL in the camera-frame convention."""
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 3 * AMASS_BODY_JOINTS:
        raise ValueError(f"expected (T, >= {3 * AMASS_BODY_JOINTS}) SMPL-H poses, got shape {arr.shape}")
    out = np.zeros((arr.shape[0], POSE_DIM), dtype=np.float64)
    out[:, : 3 * AMASS_BODY_JOINTS] = arr[:, : 3 * AMASS_BODY_JOINTS]
    root = torch.from_numpy(np.ascontiguousarray(out[:, :3]))
    out[:, :3] = zup_root_to_camera_frame(root).numpy()
    return out.astype(np.float32)


class AmassFiles:
    """Sequences under one AMASS root, loaded once each (a few kept in memory) and converted to SMPL."""

    def __init__(self, ctx: ReadContext, amass_root: str, keep: int = 8, convert: bool = True) -> None:
        self.ctx = ctx
        self.root = ctx.path(amass_root)
        self.keep = keep
        self.convert = convert
        """False: frames stay SMPL-H in AMASS's z-up world (PoseFix's in-sequence pairs need the raw roots)."""
        self._cache: OrderedDict[str, tuple[str, np.ndarray | str]] = OrderedDict()

    def resolve_sequence(self, rel: str) -> tuple[str | None, list[str]]:
        """(the URI that exists or None, every URI tried)."""
        tried = [resolve(self.root, c) for c in alias_candidates(rel)]
        for uri in tried:
            if self.ctx.exists(uri):
                return uri, tried
        return None, tried

    def sequence(self, rel: str) -> tuple[str, np.ndarray | str]:
        """(URI, (T, 72) SMPL poses; raw (T, ≥66) without ``convert``) or (URI or rel, the reason it cannot be used)."""
        if rel in self._cache:
            self._cache.move_to_end(rel)
            return self._cache[rel]
        uri, tried = self.resolve_sequence(rel)
        result: tuple[str, np.ndarray | str]
        if uri is None:
            result = (rel, f"AMASS file {rel} not found (tried {', '.join(tried)})")
        else:
            try:
                arrays = self.ctx.read_npz(uri)
                if "poses" not in arrays:
                    raise RawFileError(f"{uri} has no 'poses' array (keys: {sorted(arrays)})")
                raw = np.asarray(arrays["poses"], dtype=np.float64)
                if not self.convert and (raw.ndim != 2 or raw.shape[1] < 3 * AMASS_BODY_JOINTS):
                    raise ValueError(
                        f"expected (T, >= {3 * AMASS_BODY_JOINTS}) SMPL-H poses, got shape {raw.shape}"
                    )
                result = (uri, smplh_to_smpl(raw) if self.convert else raw)
            except (RawFileError, ValueError) as exc:
                result = (uri, f"AMASS file {uri}: {exc}")
        self._cache[rel] = result
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return result

    def frame(self, rel: str, index: int) -> tuple[str, np.ndarray | str]:
        """(URI, (72,) pose of frame ``index``) or (URI, reason)."""
        uri, seq = self.sequence(rel)
        if isinstance(seq, str):
            return uri, seq
        if not 0 <= index < len(seq):
            return uri, f"AMASS file {uri} has {len(seq)} frames, frame {index} requested"
        return uri, seq[index]
