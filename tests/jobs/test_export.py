"""jobs/export.py: a merged folder that plain transformers loads, with the same logits."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]


def export_main():
    spec = importlib.util.spec_from_file_location("export_job", REPO / "jobs" / "export.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("export_job", module)
    spec.loader.exec_module(module)
    return module.main


def test_export_loads_in_plain_transformers_with_the_same_logits(
    posing_checkpoint_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from posegpt.model.checkpoint import load_checkpoint
    from posegpt.model.collate import Collator
    from posegpt.model.pose_head import head_from_state
    from tests.fixtures.model import mixed_rows

    out = tmp_path / "merged"
    assert export_main()(["--checkpoint", str(posing_checkpoint_dir), "--out", str(out)]) == 0

    merged = LlavaForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    info = yaml.safe_load((out / "posegpt.yaml").read_text())
    assert processor.tokenizer.convert_tokens_to_ids("<POSE>") == info["pose_token_id"]
    assert not any("lora" in name for name, _ in merged.named_parameters())

    model = load_checkpoint(posing_checkpoint_dir)
    batch = Collator.for_model(model)(mixed_rows(4))
    with torch.no_grad():
        hidden, _ = model.encode(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            pose_pixel_values=batch.get("pose_pixel_values"),
        )
        expected = model.lm_logits(hidden)
        images = {"pixel_values": batch["pixel_values"]}
        if model.pose_pathway is not None:
            # The pose encoder's tokens follow the merged CLIP's, through transformers' precomputed-features input.
            clip = merged.model.get_image_features(pixel_values=batch["pixel_values"], return_dict=True)
            pose = model.pose_pathway(batch["pose_pixel_values"])
            clip.pooler_output = [torch.cat([c, p]) for c, p in zip(clip.pooler_output, pose, strict=True)]
            images = {"mm_encoder_outputs": {"image": clip}}
        plain = merged(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
            **images,
        )
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(plain.logits[mask], expected[mask], atol=1e-4, rtol=1e-4)

    # The head beside the weights reads the merged model's hidden states to the same poses.
    head = head_from_state(load_file(str(out / "pose_head.safetensors")), "exported pose head")
    head.eval()
    index = batch["pose_index"]
    with torch.no_grad():
        poses = head.rotmats(plain.hidden_states[-1][index[:, 0], index[:, 1]])
        ref = model(batch).pred_rotmats
    torch.testing.assert_close(poses, ref, atol=1e-4, rtol=1e-4)


def test_export_refuses_a_non_empty_folder(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export_main()(["--checkpoint", str(tiny_checkpoint_dir), "--out", str(tmp_path)])
