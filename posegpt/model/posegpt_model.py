"""PoseGPT: a LLaVA backbone (LoRA-adapted) and the SMPL head, with the training loss.

``PoseGPTModel`` is a plain ``nn.Module`` whose ``forward`` takes a collated batch
(``posegpt.model.collate.Collator``) and returns the losses, so a trainer can wrap
it with ``deepspeed.initialize`` and call ``engine(batch)``.

Loss (DESIGN.md): ``λ_t · CE(assistant tokens) + λ_θ · mean |R̂ − R|`` over the 24
rotation matrices of every ``<POSE>``. The hidden state for a ``<POSE>`` is the
final-layer state at the position whose next-token prediction is ``<POSE>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posegpt.body.skeleton import NUM_JOINTS
from posegpt.geometry import axis_angle_to_rotmat
from posegpt.model.config import PoseGPTModelConfig
from posegpt.model.conversation import IGNORE_INDEX
from posegpt.model.pose_head import PoseHead
from posegpt.model.pose_input import PoseInputEncoder, embedding_rms
from posegpt.model.vision_input import num_image_tokens
from posegpt.runtime import DEFAULT_CACHE_DIR
from posegpt.storage import StorageConfig
from posegpt.vision.pose_encoder import PosePathway


@dataclass
class PoseGPTOutput:
    """Losses of one batch; ``loss`` is what to back-propagate."""

    loss: Tensor
    text_loss: Tensor
    pose_loss: Tensor
    n_text_tokens: int
    n_poses: int
    pred_rotmats: Tensor
    """(P, 24, 3, 3) predicted rotations, one per ``<POSE>`` of the batch, in batch order."""


class PoseGPTModel(nn.Module):
    """LLaVA (optionally wrapped by PEFT) + ``PoseHead``, with the processor that feeds them.

    With a ``pose_pathway`` (``cfg.pose_encoder``), each image becomes CLIP's tokens
    followed by the pose encoder's projected tokens (or the latter alone, ``mode:
    replace``), all at the ``<image>`` placeholder: transformers' LLaVA scatters them
    through its ``mm_encoder_outputs`` input, so cached generation takes the same path.

    With a ``pose_input`` encoder (``cfg.pose_input_tokens`` > 0), each pose given in a user
    turn (``<POSE_IN>``, expanded to ``pose_input_tokens`` ids by the collator) becomes that
    many input embeddings: the embeddings of the ids are computed here, the pose positions
    overwritten, and LLaVA gets ``inputs_embeds`` (its documented alternative to ``input_ids``;
    it then finds ``<image>`` positions by their embedding, which they keep).
    """

    def __init__(
        self,
        lm: nn.Module,
        pose_head: PoseHead,
        processor: Any,
        cfg: PoseGPTModelConfig,
        pose_token_id: int,
        pose_pathway: PosePathway | None = None,
        pose_input: PoseInputEncoder | None = None,
        pose_input_token_id: int | None = None,
    ):
        super().__init__()
        self.lm = lm
        self.pose_head = pose_head
        self.processor = processor
        self.cfg = cfg
        self.pose_token_id = int(pose_token_id)
        if cfg.pose_encoder.enabled and pose_pathway is None:
            raise ValueError(f"model.pose_encoder.kind={cfg.pose_encoder.kind} but no pose pathway was built")
        self.pose_pathway = pose_pathway
        if (cfg.pose_input_tokens > 0) != (pose_input is not None and pose_input_token_id is not None):
            raise ValueError(
                f"model.pose_input_tokens={cfg.pose_input_tokens} needs a pose input encoder and the "
                f"{cfg.pose_input_token} token id exactly when it is > 0"
            )
        if pose_input is not None and pose_input.num_tokens != cfg.pose_input_tokens:
            raise ValueError(
                f"the pose input encoder makes {pose_input.num_tokens} tokens per pose, "
                f"model.pose_input_tokens is {cfg.pose_input_tokens}"
            )
        self.pose_input = pose_input
        self.pose_input_token_id = None if pose_input_token_id is None else int(pose_input_token_id)
        config = self.llava.config
        self.image_token_id = int(config.image_token_id)
        clip_tokens = num_image_tokens(config)
        if pose_pathway is None:
            self.num_image_tokens = clip_tokens
        else:
            uses_clip = cfg.pose_encoder.mode == "append"
            self.num_image_tokens = clip_tokens * uses_clip + pose_pathway.num_tokens
        self.context_length = int(config.text_config.max_position_embeddings)
        check_processor(processor, config)

    @property
    def llava(self) -> Any:
        """The ``LlavaForConditionalGeneration`` inside (LoRA layers injected in place)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return self.pose_head.fc1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llava.dtype

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        pose_pixel_values: Tensor | None = None,
        pose_inputs: Tensor | None = None,
    ) -> tuple[Tensor, Any]:
        """Final-layer hidden states (B, L, H) (after the last norm, what the LM head reads) and the KV cache.

        ``pixel_values`` feed CLIP, ``pose_pixel_values`` the pose encoder (one row per image, in row order),
        ``pose_inputs`` (Q, 72) the pose input encoder: one axis-angle pose per ``<POSE_IN>`` block of
        ``input_ids``, in row-major order (row by row, left to right).
        """
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.device, self.llava.model.vision_tower.dtype)
        images: dict[str, Any] = {}
        if self.pose_pathway is None:
            images["pixel_values"] = pixel_values
        elif pose_pixel_values is not None:
            images["mm_encoder_outputs"] = {"image": self.image_features(pixel_values, pose_pixel_values)}
        elif pixel_values is not None:
            raise ValueError(
                "this model has a pose encoder: pass pose_pixel_values with the images "
                "(posegpt.model.vision_input.image_inputs makes both)"
            )
        tokens = self.input_tokens(input_ids, pose_inputs, check=cache is None)
        out = self.llava.model(
            **tokens,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **images,
        )
        return out.last_hidden_state, out.cache

    def input_tokens(
        self, input_ids: Tensor, pose_inputs: Tensor | None, *, check: bool = True
    ) -> dict[str, Tensor]:
        """``input_ids``, or ``inputs_embeds`` with the pose input encoder's embeddings at the ``<POSE_IN>`` ids.

        ``check`` looks for ``<POSE_IN>`` ids without poses (one device sync; decoding steps skip it,
        since generation never emits ``<POSE_IN>``).
        """
        input_ids = input_ids.to(self.device)
        if self.pose_input is None or self.pose_input_token_id is None:
            if pose_inputs is not None and len(pose_inputs):
                raise ValueError("pose inputs were given but this model has no pose input encoder")
            return {"input_ids": input_ids}
        placeholders = input_ids == self.pose_input_token_id
        if pose_inputs is None or len(pose_inputs) == 0:
            if check and bool(placeholders.any()):
                raise ValueError(
                    f"the input holds {self.cfg.pose_input_token} tokens but no pose inputs were given"
                )
            return {"input_ids": input_ids}
        features = self.pose_input(pose_inputs.to(self.device))
        n_slots, n_features = int(placeholders.sum()), features.shape[0] * features.shape[1]
        if n_slots != n_features:
            raise ValueError(
                f"the input holds {n_slots} {self.cfg.pose_input_token} positions but {len(pose_inputs)} pose "
                f"inputs give {n_features} embeddings ({self.cfg.pose_input_tokens} per pose)"
            )
        embeds = self.llava.get_input_embeddings()(input_ids)
        embeds = embeds.masked_scatter(
            placeholders.unsqueeze(-1), features.reshape(-1, features.shape[-1]).to(embeds.dtype)
        )
        return {"inputs_embeds": embeds}

    def image_features(self, pixel_values: Tensor | None, pose_pixel_values: Tensor) -> Any:
        """Per image, CLIP's projected tokens (``append``) followed by the pose pathway's, as LLaVA's image output."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        assert self.pose_pathway is not None
        pose = self.pose_pathway(pose_pixel_values.to(self.device))
        if self.cfg.pose_encoder.mode == "replace":
            return BaseModelOutputWithPooling(pooler_output=list(pose.to(self.dtype)))
        if pixel_values is None or len(pixel_values) != len(pose):
            raise ValueError(
                f"model.pose_encoder.mode=append needs CLIP pixels for each of the {len(pose)} images, got "
                f"{0 if pixel_values is None else len(pixel_values)}"
            )
        clip = self.llava.model.get_image_features(pixel_values=pixel_values, return_dict=True)
        clip.pooler_output = [
            torch.cat([c, p.to(c.dtype)]) for c, p in zip(clip.pooler_output, pose, strict=True)
        ]
        return clip

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return self.llava.lm_head(hidden)

    def rotation_l1(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean |R̂ − R| per joint, averaged over joints with the root weighted by ``pose_loss_root_weight``."""
        per_joint = (pred - target).abs().mean(dim=(-2, -1))
        weights = torch.ones(NUM_JOINTS, dtype=per_joint.dtype, device=per_joint.device)
        weights[0] = self.cfg.pose_loss_root_weight
        return (per_joint * weights).sum(-1).mean() / weights.sum()

    def merge_lora(self) -> None:
        """Fold LoRA, the token rows and the projector into the base weights (inference only).

        Decoding then runs plain linear layers: no adapter branches per step. The
        result can no longer be trained or saved as an adapter checkpoint.
        """
        if hasattr(self.lm, "merge_and_unload"):
            self.lm = self.lm.merge_and_unload()

    def forward(self, batch: Mapping[str, Tensor]) -> PoseGPTOutput:
        """Loss of a collated batch: keys ``input_ids``, ``attention_mask``, ``labels``, optional
        ``pixel_values`` (one per row with an image, in row order), ``pose_index`` (P, 2),
        ``pose_targets`` (P, 72) and ``pose_inputs`` (Q, 72, one per ``<POSE_IN>``)."""
        device = self.device
        input_ids = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        labels = batch["labels"].to(device)
        hidden, _ = self.encode(
            input_ids,
            attention_mask,
            batch.get("pixel_values"),
            pose_pixel_values=batch.get("pose_pixel_values"),
            pose_inputs=batch.get("pose_inputs"),
        )

        # Next-token CE over assistant tokens only: logits only where a label exists
        # (saves the B × L × vocab tensor of a 7B model).
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        n_text = int(keep.sum())
        if n_text:
            logits = self.lm_logits(hidden[:, :-1][keep]).float()
            text_loss = F.cross_entropy(logits, targets[keep])
        else:
            text_loss = hidden.sum() * 0.0

        pose_index = batch.get("pose_index")
        n_poses = 0 if pose_index is None else int(pose_index.shape[0])
        if n_poses:
            pose_index = pose_index.to(device)
            states = hidden[pose_index[:, 0], pose_index[:, 1]]
            pred = self.pose_head.rotmats(states)
            target = axis_angle_to_rotmat(
                batch["pose_targets"].to(device, torch.float32).view(-1, NUM_JOINTS, 3)
            )
            pose_loss = self.rotation_l1(pred, target)
        else:
            # Run the head on no rows so its parameters still get (zero) gradients: ZeRO and
            # DDP then see the same parameter set in every step.
            pred = self.pose_head.rotmats(hidden[:0, 0])
            pose_loss = pred.sum() * 0.0
        loss = self.cfg.lambda_text * text_loss + self.cfg.lambda_pose * pose_loss
        pose_inputs = batch.get("pose_inputs")
        if self.pose_input is not None and (pose_inputs is None or len(pose_inputs) == 0):
            # As for the head: zero gradients for the pose input encoder in a batch without pose inputs.
            loss = loss + self.pose_input(hidden.new_zeros(0, NUM_JOINTS * 3)).sum() * 0.0
        return PoseGPTOutput(loss, text_loss, pose_loss, n_text, n_poses, pred)


def check_processor(processor: Any, llava_config: Any) -> None:
    """The image processor must produce the size the vision tower was built for."""
    image_processor = processor.image_processor
    crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
    if hasattr(crop, "height"):
        height, width = crop.height, crop.width
    elif isinstance(crop, Mapping):
        height = crop.get("height", crop.get("shortest_edge"))
        width = crop.get("width", crop.get("shortest_edge"))
    else:
        return
    side = llava_config.vision_config.image_size
    if height is not None and (height, width) != (side, side):
        raise ValueError(
            f"the image processor makes {height}x{width} inputs but the vision tower expects {side}x{side}"
        )


def build_model(
    cfg: PoseGPTModelConfig,
    *,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    storage: StorageConfig | None = None,
    device: str | torch.device = "cpu",
    lora: bool = True,
) -> PoseGPTModel:
    """A fresh PoseGPT from the base LLaVA of ``cfg``: ``<POSE>`` (and ``<POSE_IN>``) added, LoRA applied, head
    (and pose input encoder) initialised."""
    from posegpt.model.loading import load_llava, load_processor, resolve_base_dir

    cfg.validate()
    base_dir = resolve_base_dir(cfg, cache_dir, storage)
    processor = load_processor(base_dir)
    llava = load_llava(base_dir, cfg.dtype, cfg.attn_implementation)
    return assemble(llava, processor, cfg, lora=lora).to(device)


def assemble(llava: Any, processor: Any, cfg: PoseGPTModelConfig, *, lora: bool = True) -> PoseGPTModel:
    """PoseGPT from an in-memory base LLaVA and its processor (both modified: token added, LoRA injected)."""
    from posegpt.model.loading import add_pose_token
    from posegpt.model.lora import apply_lora

    llava.requires_grad_(False)
    word_rms = embedding_rms(llava.get_input_embeddings().weight)
    pose_id = add_pose_token(llava, processor.tokenizer, cfg.pose_token)
    new_ids = [pose_id]
    pose_input, pose_input_id = None, None
    if cfg.pose_input_tokens:
        # Its input row is always overwritten; its rows are trained and saved like <POSE>'s so the
        # LM head's row (in every softmax) is restored exactly by a checkpoint.
        pose_input_id = add_pose_token(llava, processor.tokenizer, cfg.pose_input_token)
        new_ids.append(pose_input_id)
        pose_input = build_pose_input(cfg, llava.config.text_config.hidden_size, word_rms).to(llava.dtype)
    head = PoseHead(
        llava.config.text_config.hidden_size,
        init=cfg.pose_head_init,
        mean_pose=cfg.pose_head_mean_pose,
        init_std=cfg.pose_head_init_std,
        input_norm=cfg.pose_head_input_norm,
        norm_momentum=cfg.pose_head_norm_momentum,
    )
    pathway, cfg = build_pose_pathway(cfg, llava.config.text_config.hidden_size, llava.dtype)
    lm: nn.Module = apply_lora(llava, cfg, new_ids) if lora else llava
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(llava)
    return PoseGPTModel(lm, head.to(llava.dtype), processor, cfg, pose_id, pathway, pose_input, pose_input_id)


def build_pose_input(cfg: PoseGPTModelConfig, hidden_size: int, word_rms: float = 1.0) -> PoseInputEncoder:
    """The pose input encoder of ``cfg`` (``pose_input_tokens`` embeddings per pose), output scaled to ``word_rms``."""
    return PoseInputEncoder(hidden_size, cfg.pose_input_tokens, word_rms)


def build_pose_pathway(
    cfg: PoseGPTModelConfig, hidden_size: int, dtype: torch.dtype
) -> tuple[PosePathway | None, PoseGPTModelConfig]:
    """The pose encoder of ``cfg.pose_encoder`` with its pretrained weights and a fresh projector, and a copy of
    ``cfg`` recording the weights' absolute path and sha256 (a checkpoint then refuses a changed file)."""
    if not cfg.pose_encoder.enabled:
        return None, cfg
    import dataclasses

    from posegpt.vision.pose_encoder import resolve_weights

    pathway = PosePathway(cfg.pose_encoder, hidden_size)
    digest = pathway.encoder.load_weights()
    encoder_cfg = dataclasses.replace(
        cfg.pose_encoder, sha256=digest, weights=str(resolve_weights(cfg.pose_encoder.weights))
    )
    return pathway.to(dtype), dataclasses.replace(cfg, pose_encoder=encoder_cfg)


def enable_gradient_checkpointing(llava: Any) -> None:
    llava.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # With every base weight frozen, the embeddings' output needs requires_grad for the
    # checkpointed blocks to pass gradients through to the LoRA layers.
    llava.enable_input_require_grads()
