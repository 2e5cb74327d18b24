"""Base checkpoints: the tiny preset's folder, S3 prefixes, the <POSE> token rows."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from posegpt.model.loading import add_pose_token, load_llava, load_processor, resolve_base_dir
from posegpt.model.tiny import CHAT_TEMPLATE
from posegpt.model.tiny import main as tiny_main
from posegpt.storage import StorageConfig, upload_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiny_base_is_a_llava_hf_folder(tiny_base_dir: Path) -> None:
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
    ):
        assert (tiny_base_dir / name).is_file(), name
    config = AutoConfig.from_pretrained(tiny_base_dir, local_files_only=True)
    assert config.model_type == "llava"
    assert config.vision_config.model_type == "clip_vision_model"
    assert config.text_config.model_type == "llama"
    processor = AutoProcessor.from_pretrained(tiny_base_dir, local_files_only=True)
    assert type(processor).__name__ == "LlavaProcessor"
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == config.image_token_index
    assert "<POSE>" not in processor.tokenizer.get_vocab()  # added by the loader, as for llava-hf
    # The plain HF processor expands <image> to as many tokens as the model has image features.
    from PIL import Image

    enc = processor(
        images=[Image.new("RGB", (64, 64))], text=["USER: <image>\nhi ASSISTANT:"], return_tensors="pt"
    )
    model = LlavaForConditionalGeneration.from_pretrained(tiny_base_dir, local_files_only=True)
    with torch.no_grad():
        out = model(**enc)
    assert out.logits.shape[1] == enc["input_ids"].shape[1]


def test_chat_template_matches_the_conversation_format(tiny_base_dir: Path) -> None:
    from posegpt.model.config import LLAVA_V1_SYSTEM
    from posegpt.model.conversation import normalize_messages, render

    processor = load_processor(tiny_base_dir)
    assert processor.chat_template == CHAT_TEMPLATE
    messages = [
        {"role": "user", "content": "<image>\nWhat is the pose?"},
        {"role": "assistant", "content": "Here is the pose."},
        {"role": "user", "content": "Describe the image."},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    _, turns = normalize_messages(messages, has_image=True, where="t")
    assert text == render(turns, system=LLAVA_V1_SYSTEM, eos_token="</s>", add_generation_prompt=True).text


def test_tiny_cli_skips_a_finished_build(tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (tiny_base_dir / "model.safetensors").stat().st_mtime_ns
    assert tiny_main(["--out", str(tiny_base_dir)]) == 0
    assert "already built" in capsys.readouterr().out
    assert (tiny_base_dir / "model.safetensors").stat().st_mtime_ns == before


def test_pose_token_rows_are_the_mean_of_the_existing_rows(tiny_base_dir: Path) -> None:
    processor = load_processor(tiny_base_dir)
    model = load_llava(tiny_base_dir)
    old = len(processor.tokenizer)
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    token = add_pose_token(model, processor.tokenizer, "<POSE>")
    assert token == old and len(processor.tokenizer) == old + 1
    assert processor.tokenizer.encode("a <POSE> b", add_special_tokens=False).count(token) == 1
    w_in, w_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert w_in.shape[0] == w_out.shape[0] == old + 1
    torch.testing.assert_close(w_in[token], before_in[:old].mean(0))
    torch.testing.assert_close(w_out[token], before_out[:old].mean(0))
    assert torch.equal(w_in[:old], before_in[:old])
    with pytest.raises(ValueError, match="already has <POSE>"):
        add_pose_token(model, processor.tokenizer, "<POSE>")


def test_missing_or_incomplete_base_folders(tiny_model_config, tiny_base_dir: Path, tmp_path: Path) -> None:
    missing = dataclasses.replace(tiny_model_config, base_model=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"does not exist.*nothing is downloaded"):
        resolve_base_dir(missing)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_base_dir, partial)
    (partial / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        resolve_base_dir(dataclasses.replace(tiny_model_config, base_model=str(partial)))


def test_build_if_missing_makes_the_tiny_base(tiny_model_config, tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        tiny_model_config, base_model=str(tmp_path / "built"), build_tiny_if_missing=True
    )
    path = resolve_base_dir(cfg)
    assert (path / "tiny_base.json").is_file()
    assert json.loads((path / "config.json").read_text())["model_type"] == "llava"


@pytest.mark.slow
def test_base_model_from_s3(
    tiny_model_config, tiny_base_dir: Path, s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    storage = StorageConfig(endpoint_url=s3_endpoint)
    uri = f"{s3_bucket}/bases/tiny-llava"
    upload_dir(tiny_base_dir, uri, storage)
    cfg = dataclasses.replace(tiny_model_config, base_model=uri)
    local = resolve_base_dir(cfg, tmp_path / "cache", storage)
    assert (
        local != tiny_base_dir
        and (local / "model.safetensors").read_bytes() == (tiny_base_dir / "model.safetensors").read_bytes()
    )
    # A second load finds every file unchanged and downloads nothing.
    stamp = (local / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_dir(cfg, tmp_path / "cache", storage) == local
    assert (local / "model.safetensors").stat().st_mtime_ns == stamp


def test_padded_embedding_rows_take_the_token_without_growing() -> None:
    """llava-hf pads its 32002-token vocabulary to 32064 rows: <POSE> fits in the padding."""
    from posegpt.model.config import TinyBaseConfig
    from posegpt.model.tiny import BUILTIN_CORPUS, make_tiny_parts

    cfg = TinyBaseConfig(vision_layers=1, text_layers=1, embedding_rows=700, vocab_size=600)
    model, processor = make_tiny_parts(BUILTIN_CORPUS, cfg)
    old = len(processor.tokenizer)
    assert old < 700
    before = model.get_input_embeddings().weight.detach().clone()
    token = add_pose_token(model, processor.tokenizer, "<POSE>")
    weight = model.get_input_embeddings().weight
    assert token == old and weight.shape[0] == 700
    torch.testing.assert_close(weight[token], before[:old].mean(0))


def test_a_build_from_older_templates_is_rebuilt_unless_it_holds_user_texts(
    tiny_base_dir: Path, tmp_path: Path
) -> None:
    from posegpt.model.config import TinyBaseConfig
    from posegpt.model.tiny import MARKER_FILE, ensure_tiny_base, is_current

    cfg = TinyBaseConfig()
    assert is_current(tiny_base_dir, cfg), "the fixture holds the current templates plus test texts"
    stale = tmp_path / "stale"
    shutil.copytree(tiny_base_dir, stale)
    marker = json.loads((stale / MARKER_FILE).read_text())

    # Built by an older checkout, with a user's corpus file: never silently rebuilt without it.
    (stale / MARKER_FILE).write_text(json.dumps({**marker, "templates": "older"}))
    with pytest.raises(ValueError, match="corpus-file"):
        ensure_tiny_base(stale, cfg)

    # Built by an older checkout from its templates alone: rebuilt from the current ones.
    (stale / MARKER_FILE).write_text(json.dumps({**marker, "templates": "older", "extra_texts": 0}))
    assert not is_current(stale, cfg)
    ensure_tiny_base(stale, cfg)
    assert is_current(stale, cfg)
    assert json.loads((stale / MARKER_FILE).read_text())["extra_texts"] == 0
