"""QA shard rows → model batches.

A row follows the shard schema (DESIGN.md): ``conversation`` (list of
``{role, content}``), ``image`` (encoded bytes or null), ``poses`` (one 72-float
list per ``<POSE_IN>`` or ``<POSE>``, in conversation order, or null) and ``sample_id``. Rows with and without an image
mix freely in one batch: ``pixel_values`` holds one entry per row *with* an
image, in row order, which is the order in which LLaVA fills the image tokens of
the flattened batch.

Collation is two parts: ``Collator.encode_row`` does the per-row work (decode the
image, tokenise, image-processor and pose-encoder pixels) and ``Collator.stack``
pads and stacks encoded rows. The training input runs ``encode_row`` on Ray Data's
CPU actors (``posegpt.training.encoding``) and only ``stack`` on the GPU workers;
calling the collator does both.

Batch keys: ``input_ids``, ``attention_mask``, ``labels`` (B, L), right-padded;
``pixel_values`` (N_img, 3, H, W) when any row has an image (and
``pose_pixel_values`` for a model with a pose encoder); ``pose_index`` (P, 2)
= (row, position of the hidden state that predicts the ``<POSE>``);
``pose_targets`` (P, 72) axis-angle; ``pose_inputs`` (Q, 72) axis-angle, one per ``<POSE_IN>``
in row-major order (a model that reads poses replaces each ``<POSE_IN>`` block's embeddings), and
``pose_input_index`` (Q, 2) = (row, first position of its block).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from posegpt.body.skeleton import POSE_DIM
from posegpt.model.conversation import IGNORE_INDEX, Encoded, encode, normalize_messages, render
from posegpt.model.vision_input import decode_image, image_inputs


@dataclass
class EncodedRow:
    """One row ready to be stacked: its tokens, pose targets and (if it has an image) its pixels."""

    encoded: Encoded
    poses: list[np.ndarray]
    """(72,) float32 axis-angle targets, one per ``<POSE>`` kept after truncation."""
    pixels: dict[str, np.ndarray]
    """Model pixel inputs of the row's image (``pixel_values`` and/or ``pose_pixel_values``), each
    (3, H, W) float32; empty for a row without an image."""
    pose_inputs: list[np.ndarray] = field(default_factory=list)
    """(72,) float32 axis-angle inputs, one per ``<POSE_IN>`` kept after truncation."""


def rows_from_columns(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A column batch (Ray Data's ``dict[str, np.ndarray]``) as a list of row dicts."""
    lengths = {len(v) for v in batch.values()}
    if len(lengths) != 1:
        raise ValueError(f"batch columns have different lengths: { {k: len(v) for k, v in batch.items()} }")
    n = lengths.pop()
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _poses(value: Any, where: str) -> list[np.ndarray]:
    if _is_null(value):
        return []
    out = []
    for i, pose in enumerate(list(value)):
        arr = np.asarray(pose, dtype=np.float32).reshape(-1)
        if arr.shape != (POSE_DIM,):
            raise ValueError(f"{where}: poses[{i}] has {arr.size} values, expected {POSE_DIM}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: poses[{i}] holds NaN or inf")
        out.append(arr)
    return out


class Collator:
    """Callable turning a list of rows (or a column batch) into a training batch."""

    def __init__(
        self,
        processor: Any,
        *,
        pose_token_id: int,
        image_token_id: int,
        num_image_tokens: int,
        system_prompt: str,
        max_length: int,
        pose_encoder: Any = None,
        pose_input_token_id: int | None = None,
        num_pose_input_tokens: int = 1,
    ) -> None:
        self.processor = processor
        self.pose_input_token_id = pose_input_token_id
        """Id of ``<POSE_IN>`` (None: the model reads no poses, a row with one is refused)."""
        self.num_pose_input_tokens = num_pose_input_tokens
        self.pose_encoder = pose_encoder
        """``PoseEncoderConfig`` of the model's pose encoder (its inputs join CLIP's), or None."""
        self.tokenizer = processor.tokenizer
        self.pose_token_id = pose_token_id
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.system_prompt = system_prompt
        self.max_length = max_length
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)

    @classmethod
    def for_model(cls, model: Any) -> Collator:
        """A collator matching a ``PoseGPTModel`` (tokens, image size, format, max length)."""
        return cls(
            model.processor,
            pose_token_id=model.pose_token_id,
            image_token_id=model.image_token_id,
            num_image_tokens=model.num_image_tokens,
            system_prompt=model.cfg.system_prompt,
            max_length=min(model.cfg.max_length, model.context_length),
            pose_encoder=model.cfg.pose_encoder,
            pose_input_token_id=model.pose_input_token_id,
            num_pose_input_tokens=model.cfg.pose_input_tokens,
        )

    def encode_row(self, row: Mapping[str, Any], index: int = 0) -> EncodedRow:
        sample_id = row.get("sample_id")
        where = f"sample {sample_id}" if sample_id is not None else f"row {index}"
        image_data = row.get("image")
        image = None if _is_null(image_data) else decode_image(image_data, f"{where}: field image")
        system, turns = normalize_messages(row.get("conversation"), has_image=image is not None, where=where)
        rendered = render(
            turns,
            system=system or self.system_prompt,
            eos_token=self.tokenizer.eos_token,
            add_generation_prompt=False,
        )
        encoded = encode(
            self.tokenizer,
            rendered,
            image_token_id=self.image_token_id,
            num_image_tokens=self.num_image_tokens,
            pose_token_id=self.pose_token_id,
            where=where,
            pose_input_token_id=self.pose_input_token_id,
            num_pose_input_tokens=self.num_pose_input_tokens,
        )
        all_poses = _poses(row.get("poses"), f"{where}: field poses")
        slots = encoded.pose_slots()
        if len(all_poses) != len(slots):
            raise ValueError(
                f"{where}: the conversation has {len(encoded.pose_input_positions)} <POSE_IN> and "
                f"{len(encoded.pose_token_positions)} <POSE> tokens but field poses holds {len(all_poses)} "
                "(one per pose token, in conversation order)"
            )
        poses = [p for p, is_input in zip(all_poses, slots, strict=True) if not is_input]
        pose_inputs = [p for p, is_input in zip(all_poses, slots, strict=True) if is_input]
        self._truncate(encoded, poses, where, pose_inputs)
        pixels: dict[str, np.ndarray] = {}
        if image is not None:
            # Per image, so rows can be encoded apart; CLIP's processor and the pose encoder's
            # preparation treat each image of a batch on its own, so stacking gives the batch result.
            inputs = image_inputs(self.processor.image_processor, [image], self.pose_encoder)
            pixels = {k: v[0].numpy().astype(np.float32, copy=False) for k, v in inputs.items()}
        return EncodedRow(encoded, poses, pixels, pose_inputs)

    def _truncate(
        self, enc: Encoded, poses: list[np.ndarray], where: str, pose_inputs: list[np.ndarray]
    ) -> None:
        """Cut at ``max_length``; poses whose ``<POSE>`` or ``<POSE_IN>`` block falls off are dropped (a
        block the cut would split goes whole); never cut an image."""
        limit = self.max_length
        if len(enc.input_ids) <= limit:
            return
        split = [p for p in enc.pose_input_positions if p < limit < p + self.num_pose_input_tokens]
        limit = split[0] if split else limit
        if enc.image_span is not None and enc.image_span[1] > limit:
            raise ValueError(
                f"{where}: max_length {self.max_length} cuts into the {self.num_image_tokens} image tokens "
                f"(ending at {enc.image_span[1]}); raise model.max_length"
            )
        enc.input_ids = enc.input_ids[:limit]
        enc.labels = enc.labels[:limit]
        enc.pose_input_positions = [p for p in enc.pose_input_positions if p < limit]
        del pose_inputs[len(enc.pose_input_positions) :]
        kept = [p for p in enc.pose_token_positions if p < limit]
        enc.pose_token_positions = kept
        del poses[len(kept) :]

    def __call__(self, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, Tensor]:
        if isinstance(rows, Mapping):
            rows = rows_from_columns(rows)
        return self.stack([self.encode_row(row, i) for i, row in enumerate(rows)])

    def stack(self, encoded: Sequence[EncodedRow]) -> dict[str, Tensor]:
        """Right-pad and stack encoded rows into a batch (no decoding, no tokenising)."""
        if len(encoded) == 0:
            raise ValueError("cannot collate an empty batch")
        length = max(len(e.encoded.input_ids) for e in encoded)
        batch = len(encoded)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        pose_index: list[tuple[int, int]] = []
        pose_targets: list[np.ndarray] = []
        input_index: list[tuple[int, int]] = []
        pose_inputs: list[np.ndarray] = []
        pixels: dict[str, list[np.ndarray]] = {}
        for i, row in enumerate(encoded):
            n = len(row.encoded.input_ids)
            input_ids[i, :n] = torch.tensor(row.encoded.input_ids)
            labels[i, :n] = torch.tensor(row.encoded.labels)
            attention[i, :n] = 1
            pose_index += [(i, p - 1) for p in row.encoded.pose_token_positions]
            pose_targets += row.poses
            input_index += [(i, p) for p in row.encoded.pose_input_positions]
            pose_inputs += row.pose_inputs
            for key, value in row.pixels.items():
                pixels.setdefault(key, []).append(value)
        out: dict[str, Tensor] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "pose_index": torch.tensor(pose_index, dtype=torch.long).view(-1, 2),
            "pose_targets": torch.from_numpy(np.stack(pose_targets))
            if pose_targets
            else torch.zeros(0, POSE_DIM),
            "pose_inputs": torch.from_numpy(np.stack(pose_inputs))
            if pose_inputs
            else torch.zeros(0, POSE_DIM),
            "pose_input_index": torch.tensor(input_index, dtype=torch.long).view(-1, 2),
        }
        out.update({key: torch.from_numpy(np.stack(values)) for key, values in pixels.items()})
        return out
