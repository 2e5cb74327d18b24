"""The pyfunc of a registered PoseGPT version, logged with MLflow's models-from-code.

Training logs this file as the model's code (``python_model=<this file>``) and the
``posegpt`` package as its ``code_paths``, so a registered version loads with
``mlflow.pyfunc.load_model`` wherever the pinned packages are installed: no pickle
that refers to a module of this repository, no checkout on ``sys.path``.

Input: a DataFrame with a ``text`` column (or a string, a list of strings, or
``{"text": ...}``); param ``max_new_tokens``. An optional ``poses`` column (or ``{"poses": ...}``)
gives each query its input poses: a list of 72 axis-angle floats per ``<POSE_IN>`` of its text
(empty or None for none), checked as the service checks them; the registered versions'
signature declares it as optional (``posegpt.training.mlflow_logging.query_signature``). Output: a
DataFrame with ``answer``
(the generated text), ``pose`` (72 axis-angle values of the first ``<POSE>``,
empty when the answer has none) and ``num_poses``.

The pose encoder's frozen weights, when the model has one, travel as the
``pose_encoder_weights`` artifact. The base model is read, in this order, from ``model_config["base_model"]`` given
to ``load_model``, from the version's ``base_model`` artifact (a small local base
is bundled at logging time), or from the location the checkpoint names (an
``s3://`` prefix for the 7B/13B presets). ``MLmodel``'s metadata names it by its
canonical id (``base_model_id``, e.g. ``llava-hf/llava-1.5-7b-hf``).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

from posegpt.tracking.registry import BASE_MODEL_ARTIFACT, CHECKPOINT_ARTIFACT, POSE_ENCODER_ARTIFACT


class PoseQueryModel(PythonModel):
    """Text queries in, answers and their first pose out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        from posegpt.inference import PoseGPT
        from posegpt.model.checkpoint import load_checkpoint

        settings = dict(context.model_config or {})
        base = settings.get("base_model") or context.artifacts.get(BASE_MODEL_ARTIFACT)
        overrides = [f"base_model={base}", "build_tiny_if_missing=false"] if base else []
        if context.artifacts.get(POSE_ENCODER_ARTIFACT):
            # The checkpoint names the frozen encoder's file where training read it; its sha256 still checks it.
            overrides.append(f"pose_encoder.weights={context.artifacts[POSE_ENCODER_ARTIFACT]}")
        load: dict[str, Any] = {"overrides": overrides}
        if settings.get("cache_dir"):
            load["cache_dir"] = settings["cache_dir"]
        model = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT], **load)
        model.merge_lora()
        self.posegpt = PoseGPT(model, **({"cache_dir": load["cache_dir"]} if "cache_dir" in load else {}))

    # No type hints on predict: MLflow would derive a signature from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        texts = query_texts(model_input)
        poses = query_poses(model_input, len(texts))
        max_new_tokens = int((params or {}).get("max_new_tokens", 64))
        answers = self.posegpt.batch(
            [{"messages": t, "poses": p} for t, p in zip(texts, poses, strict=True)],
            max_new_tokens=max_new_tokens,
        )
        return pd.DataFrame(
            {
                "answer": [a.text for a in answers],
                "pose": [a.poses[0].astype(float).tolist() if len(a.poses) else [] for a in answers],
                "num_poses": [len(a.poses) for a in answers],
            }
        )


def query_texts(model_input: Any) -> list[str]:
    """The query strings of a pyfunc input (DataFrame, dict, string or list)."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns"):
        if "text" not in model_input.columns:
            raise ValueError(f"pose queries need a 'text' column, got columns {list(model_input.columns)}")
        return [str(t) for t in model_input["text"].tolist()]
    if isinstance(model_input, dict) and "text" in model_input:
        value = model_input["text"]
        return [value] if isinstance(value, str) else [str(t) for t in value]
    return [str(t) for t in model_input]


def query_poses(model_input: Any, n: int) -> list[list[list[float]] | None]:
    """The input poses of each of the ``n`` queries (None where a query gives none)."""
    if hasattr(model_input, "columns"):
        column = model_input["poses"].tolist() if "poses" in model_input.columns else None
    elif isinstance(model_input, dict):
        column = model_input.get("poses")
        if column is not None and isinstance(model_input.get("text"), str):
            column = [column]
    else:
        column = None
    if column is None:
        return [None] * n
    if len(column) != n:
        raise ValueError(f"'poses' has {len(column)} entries for {n} queries")
    # A DataFrame cell may hold a numpy array of arrays: plain lists for the model's checks.
    return [None if p is None or len(p) == 0 else [list(map(float, pose)) for pose in p] for p in column]


mlflow.models.set_model(PoseQueryModel())
