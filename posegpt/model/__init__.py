"""PoseGPT model: LLaVA backbone + LoRA + SMPL head (see DESIGN.md, "Model").

Modules: ``config`` (settings), ``loading`` (base checkpoints, ``<POSE>`` token),
``conversation`` (LLaVA-1.5 format, label masking), ``vision_input`` (images),
``collate`` (shard rows → batches), ``pose_head``, ``lora``, ``posegpt_model``
(forward and loss), ``checkpoint`` (save/load), ``export`` (merged HF folder),
``tiny`` (the embedded tiny preset).
"""
