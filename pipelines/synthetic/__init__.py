"""The synthetic world: raw datasets in the real formats, generated from a seed.

``write_world(cfg, out)`` (``jobs/synth.py``) writes, under ``out``::

    world.json                      manifest: config, counts, and the paths below
    amass/<Dataset>/<subject>/<nnnn>_<activity>_poses.npz
                                    AMASS "SMPL+H G": poses (T,156) axis-angle in AMASS's z-up
                                    world, trans (T,3), betas (16,), gender, mocap_framerate.
                                    Half the sequences sit under AMASS's old folder names
                                    (BioMotionLab_NTroje, MPI_HDM05, MPI_Limits, DFaust_67, CMU),
                                    half under today's (BMLrub, HDM05, PosePrior, DFaust, CMU).
    posescript/                     PoseScript V2: ids_2_dataset_sequence_and_frame_index_100k.json
                                    (id → ["AMASS", "<old name>/<subject>/<file>", frame]),
                                    {train,val,test}_ids_100k.json, posescript_human_6293.json
                                    (id → caption, or a list of two), posescript_auto_100k.json
                                    (id → list of automatic captions)
    posescript_v1/                  PoseScript V1 copy of the first ids: ids_2_dataset_sequence_and_
                                    frame_index.json, {train,val,test}_ids.json, human6293.json,
                                    automatic_A.json … automatic_F.json (id → caption)
    spg/spg_{split}.json            [{"pose_id": int, "activity": str, "description": str}]:
                                    implicit activity descriptions ("this person is proposing
                                    marriage") of PoseScript V2 pose ids of that split
    spin/{split}.npz                SPIN style: imgname (relative to spin/), center (N,2),
                                    scale (N,) = 1.2 × box side / 200, pose (N,72) in the camera
                                    frame, shape (N,10), has_smpl (N,) (a few rows 0, pose zeros);
                                    also bbox (N,4) tight [x0, y0, x1, y1] (not a SPIN key:
                                    readers ignore it, the person detector trains on it)
    spin/images/{split}/*.jpg
    hmr2/{split}.npz                HMR2 style: imgname, center (N,2), scale in pixels ((N,2)
                                    [w, h] for train, (N,) for val/test), body_pose (N,72),
                                    has_body_pose, betas (N,10), has_betas, and bbox like SPIN
    hmr2/images/{split}/*.jpg
    rpe/rpe_{split}.json            one entry per person of a 2–3 person scene:
                                    {"image": "images/<split>/<n>.jpg" (relative to rpe/),
                                     "width", "height", "num_people",
                                     "person": {"center": [x, y], "scale" (SPIN's), "bbox":
                                                [x0, y0, x1, y1], "pose" (72, camera frame),
                                                "betas" (10), "activity", "position"},
                                     "descriptions": {"behaviour", "outfit", "pose", "shape",
                                                      "summary"}}  (each identifies the person)
    rpe/images/{split}/*.jpg
    llava/llava_v1_5_mix665k.json   LLaVA instruction rows; image paths relative to ``out``

Frames: AMASS roots are ``Rz(yaw)·Rx(+90°)·A`` for an activity orientation ``A``
(canonical SMPL frame, y up), so DESIGN.md's conversion (zero the yaw, then
``Rx(+90°)``) gives ``Ry(φ)·Rx(180°)·A``, the camera convention up to a turn about
the vertical. Image poses are in the camera frame (x right, y down, z forward):
root ``Rx(pitch)·Ry(yaw)·Rx(180°)·A``. Images are 256 px JPEGs by default.

Splits are drawn per sequence (so frames of one motion never straddle splits),
per image and per scene. The same seed gives the same bytes in every file.
"""

from pipelines.synthetic.config import SynthConfig
from pipelines.synthetic.world import WorldSummary, write_world

__all__ = ["SynthConfig", "WorldSummary", "write_world"]
