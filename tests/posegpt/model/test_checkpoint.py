"""Checkpoint directories: bit-identical reloads, S3, clear errors for broken folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from posegpt.model.checkpoint import REQUIRED_FILES, load_checkpoint, save_checkpoint
from posegpt.model.collate import Collator
from posegpt.storage import StorageConfig, upload_dir
from tests.fixtures.model import mixed_rows, pose_input_rows, torch_threads

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tiny_model_config, tmp_path_factory: pytest.TempPathFactory):
    """A model whose LoRA, token rows, projectors and head all differ from their init, and its checkpoint."""
    from posegpt.model.posegpt_model import build_model

    with torch_threads(1):
        torch.manual_seed(1)
        model = build_model(tiny_model_config)
        batch = Collator.for_model(model)([*mixed_rows(6), *pose_input_rows()])
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
        model.train()
        for _ in range(2):
            opt.zero_grad()
            model(batch).loss.backward()
            opt.step()
        model.eval()
        path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "checkpoint")
        return model, path, batch


def outputs(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        hidden, _ = model.encode(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            pose_pixel_values=batch.get("pose_pixel_values"),
            pose_inputs=batch["pose_inputs"],
        )
        return model.lm_logits(hidden), model(batch).pred_rotmats


def test_reload_gives_bit_identical_outputs(trained) -> None:
    model, path, batch = trained
    loaded = load_checkpoint(path)
    logits, poses = outputs(model, batch)
    logits2, poses2 = outputs(loaded, batch)
    assert torch.equal(logits, logits2)
    assert torch.equal(poses, poses2)
    # The trained <POSE> rows came back (not the mean initialisation of a fresh load).
    emb = model.llava.get_input_embeddings()
    emb2 = loaded.llava.get_input_embeddings()
    assert torch.equal(
        emb.token_adapter.trainable_tokens_delta["default"],
        emb2.token_adapter.trainable_tokens_delta["default"],
    )
    assert not any(p.requires_grad for p in loaded.parameters())
    # The trained pose input encoder came back too (a fresh one would differ).
    for key, value in model.pose_input.state_dict().items():
        assert torch.equal(value, loaded.pose_input.state_dict()[key]), key


def test_checkpoint_layout_names_the_base_model(trained, tiny_base_dir: Path) -> None:
    _, path, _ = trained
    for name, _ in REQUIRED_FILES:
        assert (path / name).is_file(), name
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    assert Path(cfg["base_model"]) == tiny_base_dir.resolve()
    # The base weights are not copied into the checkpoint.
    assert not list(path.rglob("model.safetensors"))


def test_trainable_reload_resumes_the_same_parameters(trained) -> None:
    model, path, _ = trained
    resumed = load_checkpoint(path, trainable=True)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, p in resumed.named_parameters() if p.requires_grad} == names


@pytest.mark.parametrize("missing", [name for name, _ in REQUIRED_FILES])
def test_missing_file_is_named(trained, tmp_path: Path, missing: str) -> None:
    _, path, _ = trained
    broken = tmp_path / "ckpt"
    shutil.copytree(path, broken)
    (broken / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"is missing {missing}"):
        load_checkpoint(broken)


def test_tokenizer_without_pose_token_is_refused(trained, tiny_base_dir: Path, tmp_path: Path) -> None:
    _, path, _ = trained
    broken = tmp_path / "ckpt"
    shutil.copytree(path, broken)
    shutil.rmtree(broken / "tokenizer")
    from posegpt.model.loading import load_processor

    load_processor(tiny_base_dir).save_pretrained(broken / "tokenizer")
    with pytest.raises(ValueError, match="has no <POSE> special token"):
        load_checkpoint(broken)


def test_missing_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_checkpoint(tmp_path / "nothing")


@pytest.mark.slow
def test_checkpoint_from_s3(trained, s3_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    model, path, batch = trained
    storage = StorageConfig(endpoint_url=s3_endpoint)
    uri = f"{s3_bucket}/runs/r1/checkpoint"
    upload_dir(path, uri, storage)
    loaded = load_checkpoint(uri, cache_dir=tmp_path, storage=storage)
    logits, poses = outputs(model, batch)
    logits2, poses2 = outputs(loaded, batch)
    assert torch.equal(logits, logits2) and torch.equal(poses, poses2)
