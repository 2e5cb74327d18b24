"""Stand-ins for SPIN's H36M protocol-2 files from the synthetic world, to run the joints-only evaluation.

    python jobs/synth_h36m.py --spin outputs/world/spin --split test

writes, beside the SPIN npz it reads, ``h36m_valid_protocol2.npz`` (imgname,
center, scale, S: the regressed joints of each posed row, no pose) and
``J_regressor_h36m.npy`` (17 rows of the body model's joint regressor). Point
``data.joints_sources.<name>.npz`` and ``metrics.h36m_regressor`` at them
(docs/evaluation.md). Real H36M needs SPIN's own files instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spin", required=True, help="folder of the synthetic world's SPIN npz files")
    parser.add_argument("--split", default="test", help="split whose <split>.npz is converted")
    parser.add_argument(
        "--body-model", default="", help="SMPL model file; empty: the bundled procedural body"
    )
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache folder (body model)")
    args = parser.parse_args(argv)
    setup_environment(args.cache_dir)

    import numpy as np

    from posegpt.body.model import BodyModel
    from posegpt.evaluation.synthetic_joints import body_h36m_regressor, spin_joints_npz

    folder = Path(args.spin)
    src = folder / f"{args.split}.npz"
    if not src.is_file():
        print(f"synth_h36m: {src} does not exist (run jobs/synth.py first)", file=sys.stderr)
        return 1
    body = BodyModel(args.body_model or None, cache_dir=args.cache_dir)
    regressor = body_h36m_regressor(body)
    np.save(folder / "J_regressor_h36m.npy", regressor)
    try:
        n = spin_joints_npz(src, folder / "h36m_valid_protocol2.npz", body, regressor)
    except ValueError as exc:
        print(f"synth_h36m: {exc}", file=sys.stderr)
        return 1
    print(
        f"synth_h36m: {n} rows → {folder / 'h36m_valid_protocol2.npz'}, regressor → {folder / 'J_regressor_h36m.npy'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
