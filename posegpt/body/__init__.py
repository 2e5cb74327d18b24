"""The SMPL body model: joint tree and pose layout (``skeleton``), the model itself (``model``), the
procedurally generated default in SMPL's file format (``procedural``), and a chumpy-free reader of
SMPL's pickles (``smpl_pickle``)."""
