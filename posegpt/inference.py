"""Chat and batch inference with a PoseGPT checkpoint.

Generation runs with the KV cache: one pass over the (left-padded) prompts, then
one token per step. The pose of a ``<POSE>`` token is read from the last hidden
state of the step that emits it — the state whose next-token prediction is
``<POSE>`` (DESIGN.md, "Pose token") — so no second pass over the answer is made.

    model = PoseGPT.from_checkpoint("outputs/train/checkpoint")      # or s3://..., models:/posegpt/3
    answer = model.chat("Show me a person sitting cross-legged.")
    answer.text, answer.poses, answer.joints

Poses as input: a user turn may hold ``<POSE_IN>`` placeholders; the query passes their
poses by value (72 axis-angle floats each, DESIGN.md's frames), one per ``<POSE_IN>`` of the
whole conversation in order. A pose answered earlier is fed back the same way::

    first = model.chat("Show me a person sitting cross-legged.")
    history = [
        {"role": "user", "content": "Show me a person sitting cross-legged."},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "<POSE_IN> Now raise the left arm."},
    ]
    edited = model.chat(history, poses=[first.poses[0]])

The encoder's embeddings replace the ``<POSE_IN>`` ids in the prompt pass; decoding then
continues from the KV cache as for any prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from posegpt.body.skeleton import NUM_JOINTS, POSE_DIM
from posegpt.data.schema import check_pose
from posegpt.geometry import rotmat_to_axis_angle
from posegpt.model.conversation import encode, normalize_messages, render
from posegpt.model.posegpt_model import PoseGPTModel
from posegpt.model.vision_input import ImageInput, decode_image, image_inputs
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.storage import StorageConfig

FinishReason = Literal["eos", "stop", "length"]


@dataclass
class GenerationSettings:
    """How answers are decoded."""

    max_new_tokens: int = 128
    """Most tokens generated per answer (also bounded by the model's context)."""
    min_new_tokens: int = 0
    """Tokens generated before the end-of-sequence token may end an answer."""
    temperature: float = 0.0
    """0: greedy decoding; > 0: sample from softmax(logits / temperature)."""
    top_k: int = 0
    """Sample only among the k most likely tokens (0: no limit)."""
    top_p: float = 1.0
    """Sample only among the most likely tokens whose probabilities add up to top_p."""
    stop: tuple[str, ...] = ()
    """Strings that end an answer; the answer text is cut before the first one."""
    seed: int | None = None
    """Seed of the sampler (None: a fresh random seed per call)."""
    return_vertices: bool = False
    """Also return the 6890 mesh vertices of every pose."""

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")


@dataclass
class Query:
    """One request: a conversation ending with a user turn, and an optional image."""

    messages: Sequence[Mapping[str, str]] | str
    """``[{"role": "user", "content": ...}, ...]`` or a single user message."""
    image: ImageInput | None = None
    """Encoded image bytes, a path, an HxWx3 uint8 array or a PIL image."""
    poses: Sequence[Sequence[float]] | np.ndarray | None = None
    """One 72-float axis-angle pose per ``<POSE_IN>`` of the user turns, in conversation order."""


def pose_inputs(poses: Sequence[Sequence[float]] | np.ndarray | None, where: str) -> np.ndarray:
    """(Q, 72) float32 input poses; ValueError naming the pose that has the wrong length, NaN/inf,
    or a rotation beyond 2π."""
    if poses is None:
        return np.zeros((0, POSE_DIM), np.float32)
    out = []
    for i, pose in enumerate(poses):
        reason = check_pose(pose, f"{where}: poses[{i}]")
        if reason:
            raise ValueError(reason)
        out.append(np.asarray(pose, dtype=np.float32))
    return np.stack(out) if out else np.zeros((0, POSE_DIM), np.float32)


@dataclass
class Answer:
    """One generated answer."""

    text: str
    """The answer text, ``<POSE>`` kept where the model emitted it."""
    poses: np.ndarray
    """(n, 72) SMPL axis-angle poses, one per ``<POSE>`` in order (n may be 0)."""
    joints: np.ndarray
    """(n, 24, 3) joints of the default body (betas 0) in metres."""
    vertices: np.ndarray | None = None
    """(n, 6890, 3) mesh vertices when asked for."""
    finish_reason: FinishReason = "eos"
    """Why generation ended: end-of-sequence token, a stop string, or the token limit."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "poses": self.poses.tolist(),
            "joints": self.joints.tolist(),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if self.vertices is not None:
            out["vertices"] = self.vertices.tolist()
        return out


@dataclass
class Generation:
    """Raw result of decoding one prompt."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    pose_states: list[Tensor] = field(default_factory=list)
    """Final-layer hidden state of each step that emitted ``<POSE>``, in order."""
    step_states: list[Tensor] = field(default_factory=list)
    """Hidden state of every step (only with ``record_states``), for equivalence checks."""
    finish_reason: FinishReason = "length"
    stop_at: int | None = None
    """Character index of a stop string in the decoded text."""


def resolve_checkpoint(
    uri: str | Path, *, cache_dir: str | Path = DEFAULT_CACHE_DIR, tracking_uri: str | None = None
) -> str:
    """A local path or ``s3://`` URI for ``uri``; a ``models:/`` URI is fetched from MLflow (``posegpt.tracking.registry``)."""
    from posegpt.tracking.registry import fetch_model_checkpoint, is_model_uri

    text = str(uri)
    return fetch_model_checkpoint(text, tracking_uri, cache_dir) if is_model_uri(text) else text


class PoseGPT:
    """A loaded PoseGPT model with chat and batched generation."""

    def __init__(
        self, model: PoseGPTModel, body: Any = None, cache_dir: str | Path = DEFAULT_CACHE_DIR
    ) -> None:
        self.model = model.eval()
        self.cache_dir = cache_dir
        self.tokenizer = model.tokenizer
        self._body = body
        tok = self.tokenizer
        self.eos_id = int(tok.eos_token_id)
        pad = tok.pad_token_id
        self.pad_id = int(pad if pad is not None else tok.eos_token_id)
        self.pose_id = model.pose_token_id
        # Specials other than <POSE> never show in the answer text.
        self.hidden_ids = {int(i) for i in tok.all_special_ids} - {self.pose_id}

    @classmethod
    def from_checkpoint(
        cls,
        uri: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | None = None,
        cache_dir: str | Path = DEFAULT_CACHE_DIR,
        storage: StorageConfig | None = None,
        tracking_uri: str | None = None,
        body: Any = None,
        merge_lora: bool = True,
    ) -> PoseGPT:
        """Load a checkpoint folder, an ``s3://`` prefix or an MLflow ``models:/name/version``.

        ``merge_lora`` folds the adapter into the weights for faster decoding.
        """
        from posegpt.model.checkpoint import load_checkpoint

        path = resolve_checkpoint(uri, cache_dir=cache_dir, tracking_uri=tracking_uri)
        model = load_checkpoint(path, cache_dir=cache_dir, storage=storage, device=device, dtype=dtype)
        if merge_lora:
            model.merge_lora()
        return cls(model, body=body, cache_dir=cache_dir)

    @property
    def body(self) -> Any:
        """The body model turning poses into joints and vertices (the bundled default unless given)."""
        if self._body is None:
            from posegpt.body.model import default_body_model

            self._body = default_body_model(self.cache_dir)
        return self._body

    # -- public API -------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Mapping[str, str]] | str,
        image: ImageInput | None = None,
        settings: GenerationSettings | None = None,
        poses: Sequence[Sequence[float]] | np.ndarray | None = None,
        **overrides: Any,
    ) -> Answer:
        """Answer the last user turn of ``messages`` (a string is one user message); ``poses``: one per
        ``<POSE_IN>`` of its user turns, in order."""
        return self.batch([Query(messages, image, poses)], settings, **overrides)[0]

    def batch(
        self,
        queries: Sequence[Query | Mapping[str, Any]],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> list[Answer]:
        """Answer several queries in one left-padded batch; answers in query order."""
        settings = replace(settings or GenerationSettings(), **overrides)
        settings.validate()
        parsed = [
            q if isinstance(q, Query) else Query(q["messages"], q.get("image"), q.get("poses"))
            for q in queries
        ]
        gens = self.generate(parsed, settings)
        return self._answers(gens, settings)

    @torch.no_grad()
    def generate(
        self, queries: Sequence[Query], settings: GenerationSettings, *, record_states: bool = False
    ) -> list[Generation]:
        """Decode every query with the KV cache, capturing the hidden state of each ``<POSE>``."""
        if not queries:
            return []
        prompts, images = zip(
            *(self.encode_query(q, f"query {i}") for i, q in enumerate(queries)), strict=True
        )
        gens = [Generation(list(p)) for p in prompts]
        given = [pose_inputs(q.poses, f"query {i}") for i, q in enumerate(queries)]
        model = self.model
        device = model.device
        n, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p)
            attention[i, width - len(p) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        # Left padding: positions count real tokens only, so a padded row sees the same
        # positions as when it runs alone.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        present = [img for img in images if img is not None]
        pixels = (
            {
                k: v.to(device)
                for k, v in image_inputs(
                    model.processor.image_processor, present, model.cfg.pose_encoder
                ).items()
            }
            if present
            else {}
        )
        # Row-major order of the <POSE_IN> blocks in the left-padded batch: row by row, in text order.
        inputs = torch.from_numpy(np.concatenate(given)).to(device) if model.pose_input is not None else None
        limits = [min(settings.max_new_tokens, model.context_length - len(p)) for p in prompts]

        generator = torch.Generator(device=device)
        generator.manual_seed(
            settings.seed if settings.seed is not None else int(torch.randint(0, 2**62, ()).item())
        )
        hidden, cache = model.encode(
            input_ids,
            attention,
            pixels.get("pixel_values"),
            positions,
            cache=None,
            use_cache=True,
            pose_pixel_values=pixels.get("pose_pixel_values"),
            pose_inputs=inputs,
        )
        last = hidden[:, -1]
        done = [False] * n
        position = positions[:, -1:]
        for step_index in range(max(limits)):
            logits = model.lm_logits(last).float()
            logits[:, model.image_token_id] = float("-inf")
            if model.pose_input_token_id is not None:
                logits[:, model.pose_input_token_id] = float("-inf")
            if step_index < settings.min_new_tokens:
                logits[:, self.eos_id] = float("-inf")
            # One device-to-host copy per step, not one per row.
            tokens = self._pick(logits, settings, generator).tolist()
            for i in range(n):
                if done[i]:
                    continue
                token = tokens[i]
                gen = gens[i]
                if record_states:
                    gen.step_states.append(last[i].float().cpu())
                if token == self.eos_id:
                    gen.finish_reason, done[i] = "eos", True
                    continue
                gen.token_ids.append(token)
                if token == self.pose_id:
                    gen.pose_states.append(last[i].detach())
                if settings.stop and self._hit_stop(gen, settings.stop):
                    gen.finish_reason, done[i] = "stop", True
                elif len(gen.token_ids) >= limits[i]:
                    gen.finish_reason, done[i] = "length", True
            if all(done):
                break
            step = torch.tensor(
                [self.pad_id if done[i] else tokens[i] for i in range(n)], device=device
            ).view(n, 1)
            attention = torch.cat(
                [attention, torch.ones((n, 1), dtype=attention.dtype, device=device)], dim=1
            )
            position = position + 1
            hidden, cache = model.encode(step, attention, None, position, cache=cache, use_cache=True)
            last = hidden[:, -1]
        return gens

    # -- pieces -----------------------------------------------------------------------------

    def encode_query(self, query: Query, where: str) -> tuple[list[int], Any]:
        """Prompt token ids (ending in ``ASSISTANT:``) and the decoded image of one query (its pose inputs
        checked against its ``<POSE_IN>`` count)."""
        model = self.model
        messages = query.messages
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        image = None if query.image is None else decode_image(query.image, f"{where}: image")
        system, turns = normalize_messages(messages, has_image=image is not None, where=where)
        if turns[-1].role != "user":
            raise ValueError(f"{where}: the conversation must end with a user turn to be answered")
        rendered = render(
            turns,
            system=system or model.cfg.system_prompt,
            eos_token=self.tokenizer.eos_token,
            add_generation_prompt=True,
        )
        enc = encode(
            self.tokenizer,
            rendered,
            image_token_id=model.image_token_id,
            num_image_tokens=model.num_image_tokens,
            pose_token_id=self.pose_id,
            where=where,
            pose_input_token_id=model.pose_input_token_id,
            num_pose_input_tokens=model.cfg.pose_input_tokens,
        )
        n_given = len(pose_inputs(query.poses, where))
        if n_given != len(enc.pose_input_positions):
            raise ValueError(
                f"{where}: the conversation holds {len(enc.pose_input_positions)} {model.cfg.pose_input_token} "
                f"but {n_given} poses were given (one per {model.cfg.pose_input_token}, in order)"
            )
        if len(enc.input_ids) >= model.context_length:
            raise ValueError(
                f"{where}: the prompt has {len(enc.input_ids)} tokens (image tokens included) but the model's "
                f"context holds {model.context_length}; shorten the conversation"
            )
        return enc.input_ids, image

    @staticmethod
    def _pick(logits: Tensor, s: GenerationSettings, generator: torch.Generator) -> Tensor:
        if s.temperature == 0:
            return logits.argmax(-1)
        logits = logits / s.temperature
        if s.top_k:
            kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if s.top_p < 1:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            probs = sorted_logits.softmax(-1)
            # Drop a token when the tokens before it already reach top_p (the first always stays).
            drop = probs.cumsum(-1) - probs >= s.top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.hidden_ids], skip_special_tokens=False)

    def _hit_stop(self, gen: Generation, stop: Sequence[str]) -> bool:
        text = self._text(gen.token_ids)
        hits = [text.find(s) for s in stop if s and s in text]
        if hits:
            gen.stop_at = min(hits)
            return True
        return False

    def _answers(self, gens: Sequence[Generation], s: GenerationSettings) -> list[Answer]:
        texts, states = [], []
        for gen in gens:
            text = self._text(gen.token_ids)
            n_poses = len(gen.pose_states)
            if gen.stop_at is not None:
                text = text[: gen.stop_at]
                n_poses = text.count(self.model.cfg.pose_token)
            texts.append(text.strip())
            states.append(gen.pose_states[:n_poses])
        flat = [st for row in states for st in row]
        poses = np.zeros((0, POSE_DIM), np.float32)
        joints = np.zeros((0, NUM_JOINTS, 3), np.float32)
        vertices = np.zeros((0, self.body.num_vertices, 3), np.float32) if s.return_vertices else None
        if flat:
            with torch.no_grad():
                rotmats = self.model.pose_head.rotmats(torch.stack(flat))
            poses = rotmat_to_axis_angle(rotmats).reshape(-1, POSE_DIM).cpu().numpy().astype(np.float32)
            joints, vertices = self._body_outputs(poses, s.return_vertices)
        answers, start = [], 0
        for gen, text, row in zip(gens, texts, states, strict=True):
            end = start + len(row)
            answers.append(
                Answer(
                    text=text,
                    poses=poses[start:end],
                    joints=joints[start:end],
                    vertices=None if vertices is None else vertices[start:end],
                    finish_reason=gen.finish_reason,
                    prompt_tokens=len(gen.prompt_ids),
                    completion_tokens=len(gen.token_ids),
                )
            )
            start = end
        return answers

    def _body_outputs(self, poses: np.ndarray, with_vertices: bool) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.body(torch.from_numpy(poses), return_vertices=with_vertices)
        joints = out.joints.detach().cpu().numpy().astype(np.float32)
        vertices = out.vertices.detach().cpu().numpy().astype(np.float32) if with_vertices else None
        return joints, vertices
