"""Pose-aware image encoders that feed the LM beside CLIP, and the pretraining of the tiny one."""
