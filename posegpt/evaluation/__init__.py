"""Evaluation of PoseGPT checkpoints: metrics, baselines, retrieval recall, reports, run comparison.

``runner.evaluate(EvalConfig)`` is the job (``jobs/evaluate.py``); ``compare.compare_runs``
builds the run table of ``jobs/compare.py``.
"""
