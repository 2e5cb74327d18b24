"""The pyfunc's input poses: a ``poses`` column beside ``text``, checked and given to the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.model import POSE_A, POSE_C

pytestmark = pytest.mark.slow


def test_a_poses_column_reaches_the_model(pose_input_checkpoint_dir: Path) -> None:
    from posegpt.inference import PoseGPT
    from posegpt.tracking.pyfunc_model import PoseQueryModel

    library = PoseGPT.from_checkpoint(pose_input_checkpoint_dir)
    pyfunc = PoseQueryModel()
    pyfunc.posegpt = library
    edit, describe = "<POSE_IN> Raise the left arm.", "Describe this pose: <POSE_IN>"
    frame = pd.DataFrame(
        {
            "text": [edit, describe, "Show me the pose of a person standing."],
            "poses": [[POSE_A], [POSE_C], None],
        }
    )
    out = pyfunc.predict(None, frame, {"max_new_tokens": 16})
    for k, (text, pose) in enumerate([(edit, POSE_A), (describe, POSE_C)]):
        expected = library.chat(text, poses=[pose], max_new_tokens=16)
        assert out["answer"][k] == expected.text
        if len(expected.poses):
            np.testing.assert_allclose(out["pose"][k], expected.poses[0], atol=1e-5)
    assert out["answer"][2] == library.chat("Show me the pose of a person standing.", max_new_tokens=16).text
    # A dict input as well; a bad pose is refused naming it.
    single = pyfunc.predict(None, {"text": edit, "poses": [POSE_A.tolist()]}, {"max_new_tokens": 16})
    assert single["answer"][0] == out["answer"][0]
    with pytest.raises(ValueError, match=r"poses\[0\].*non-finite"):
        pyfunc.predict(None, {"text": edit, "poses": [[float("nan")] * 72]}, {"max_new_tokens": 4})
    with pytest.raises(ValueError, match="'poses' has 1 entries for 2 queries"):
        pyfunc.predict(None, {"text": [edit, edit], "poses": [[POSE_A]]}, None)
