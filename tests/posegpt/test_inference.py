"""Generation with the KV cache: equivalence with teacher forcing, batching, poses, bad input."""

from __future__ import annotations

import io

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
import torch
from PIL import Image

from posegpt.inference import GenerationSettings, PoseGPT, Query
from tests.fixtures.model import POSE_A, POSE_B, POSING_SAMPLES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def png(seed: int, size: tuple[int, int] = (48, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def posegpt(posing_checkpoint_dir) -> PoseGPT:
    return PoseGPT.from_checkpoint(posing_checkpoint_dir)


def test_trained_prompts_give_their_answers_and_poses(posegpt: PoseGPT) -> None:
    for sample in POSING_SAMPLES:
        answer = posegpt.chat(sample["prompt"], max_new_tokens=24)
        assert answer.text == sample["answer"]
        assert answer.finish_reason == "eos"
        assert answer.poses.shape == (len(sample["poses"]), 72)
        assert answer.joints.shape == (len(sample["poses"]), 24, 3)
    # The first pose of both trained answers is POSE_A: the head learned it.
    one = posegpt.chat(POSING_SAMPLES[0]["prompt"], max_new_tokens=24)
    assert np.abs(one.poses[0] - POSE_A).mean() < np.abs(one.poses[0] - POSE_B).mean()
    two = posegpt.chat(POSING_SAMPLES[1]["prompt"], max_new_tokens=24)
    assert not np.allclose(two.poses[0], two.poses[1])  # two read-outs from two different states


def test_cached_hidden_states_equal_a_teacher_forced_pass(posegpt: PoseGPT) -> None:
    queries = [Query(POSING_SAMPLES[1]["prompt"]), Query("What is the pose of the person?", png(3))]
    gens = posegpt.generate(queries, GenerationSettings(max_new_tokens=12), record_states=True)
    model = posegpt.model
    for query, gen in zip(queries, gens, strict=True):
        ids = torch.tensor([gen.prompt_ids + gen.token_ids])
        pixels = {}
        if query.image is not None:
            from posegpt.model.vision_input import decode_image, image_inputs

            image = decode_image(query.image, "q")
            pixels = image_inputs(model.processor.image_processor, [image], model.cfg.pose_encoder)
        with torch.no_grad():
            hidden, _ = model.encode(
                ids,
                torch.ones_like(ids),
                pixels.get("pixel_values"),
                pose_pixel_values=pixels.get("pose_pixel_values"),
            )
        start = len(gen.prompt_ids) - 1  # the state predicting the first generated token
        forced = hidden[0, start : start + len(gen.step_states)]
        torch.testing.assert_close(torch.stack(gen.step_states), forced, atol=1e-4, rtol=0)
        # Each <POSE>'s captured state is the forced state one position before it.
        positions = [len(gen.prompt_ids) + i for i, t in enumerate(gen.token_ids) if t == posegpt.pose_id]
        assert len(positions) == len(gen.pose_states)
        for pos, state in zip(positions, gen.pose_states, strict=True):
            torch.testing.assert_close(state, hidden[0, pos - 1], atol=1e-4, rtol=0)
    assert len(gens[0].pose_states) == 2


def test_batched_equals_one_by_one(posegpt: PoseGPT) -> None:
    queries = [
        Query(POSING_SAMPLES[0]["prompt"]),
        Query("What is the pose of the person in this image?", png(1)),
        Query(POSING_SAMPLES[1]["prompt"]),
        Query([{"role": "user", "content": "Describe the image."}], png(2, (90, 30))),
        Query(POSING_SAMPLES[2]["prompt"]),
    ]
    together = posegpt.batch(queries, max_new_tokens=16)
    for query, batched in zip(queries, together, strict=True):
        alone = posegpt.batch([query], max_new_tokens=16)[0]
        assert batched.text == alone.text
        assert batched.finish_reason == alone.finish_reason
        np.testing.assert_allclose(batched.poses, alone.poses, atol=1e-4)
        np.testing.assert_allclose(batched.joints, alone.joints, atol=1e-4)


def test_history_with_poses_is_accepted(posegpt: PoseGPT) -> None:
    history = [
        {"role": "user", "content": POSING_SAMPLES[0]["prompt"]},
        {"role": "assistant", "content": POSING_SAMPLES[0]["answer"]},
        {"role": "user", "content": POSING_SAMPLES[1]["prompt"]},
    ]
    answer = posegpt.chat(history, max_new_tokens=12)
    assert answer.poses.shape[0] == answer.text.count("<POSE>")
    assert answer.prompt_tokens > len(posegpt.encode_query(Query(history[-1:]), "q")[0])


def test_answer_without_pose_token_has_no_poses(posegpt: PoseGPT) -> None:
    answer = posegpt.chat(POSING_SAMPLES[2]["prompt"], return_vertices=True)
    assert "<POSE>" not in answer.text
    assert answer.poses.shape == (0, 72) and answer.joints.shape == (0, 24, 3)
    assert answer.vertices is not None and answer.vertices.shape[0] == 0


def test_joints_and_vertices_come_from_the_body_model(posegpt: PoseGPT) -> None:
    answer = posegpt.chat(POSING_SAMPLES[0]["prompt"], return_vertices=True)
    out = posegpt.body(torch.from_numpy(answer.poses), return_vertices=True)
    np.testing.assert_allclose(answer.joints, out.joints.numpy(), atol=1e-6)
    assert answer.vertices.shape == (1, posegpt.body.num_vertices, 3)
    assert answer.to_dict()["poses"] == answer.poses.tolist()


def test_token_limit_and_stop_strings(posegpt: PoseGPT) -> None:
    short = posegpt.chat(POSING_SAMPLES[1]["prompt"], max_new_tokens=2)
    assert short.finish_reason == "length" and short.completion_tokens == 2
    stopped = posegpt.chat(POSING_SAMPLES[1]["prompt"], stop=(" then",))
    assert stopped.finish_reason == "stop"
    assert stopped.text == "First <POSE>"
    assert stopped.poses.shape == (1, 72)  # the pose after the stop string is dropped with its text


def test_sampling_is_reproducible_with_a_seed(posegpt: PoseGPT) -> None:
    settings = {"temperature": 1.5, "top_k": 50, "top_p": 0.95, "max_new_tokens": 10}
    a = posegpt.chat("Show me a person.", seed=3, **settings)
    b = posegpt.chat("Show me a person.", seed=3, **settings)
    assert a.text == b.text
    texts = {posegpt.chat("Show me a person.", seed=s, **settings).text for s in range(4)}
    assert len(texts) > 1  # sampling, not greedy


def test_bad_inputs_are_named(posegpt: PoseGPT) -> None:
    with pytest.raises(ValueError, match="query 0: image: not a readable image"):
        posegpt.chat("What is the pose?", image=b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"prompt has \d+ tokens .* context holds 512"):
        posegpt.chat("stand " * 600)
    with pytest.raises(ValueError, match="must end with a user turn"):
        posegpt.chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    with pytest.raises(ValueError, match="max_new_tokens"):
        posegpt.chat("hi", max_new_tokens=0)


class _Passthrough(mlflow.pyfunc.PythonModel):
    """Stands in for training's pose-query pyfunc (only its artifacts matter here)."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


@pytest.mark.slow
def test_load_from_mlflow_model_uri(posing_checkpoint_dir, mlflow_server: str, tmp_path) -> None:
    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment = client.create_experiment("inference-test")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(posing_checkpoint_dir), artifact_path="model/checkpoint")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("posegpt-inference-test")
    version = client.create_model_version(
        "posegpt-inference-test", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("posegpt-inference-test", "champion", version.version)
    for uri in (
        f"models:/posegpt-inference-test/{version.version}",
        "models:/posegpt-inference-test@champion",
    ):
        model = PoseGPT.from_checkpoint(uri, tracking_uri=mlflow_server, cache_dir=tmp_path)
        assert model.chat(POSING_SAMPLES[0]["prompt"]).text == POSING_SAMPLES[0]["answer"]
    # As training registers it (posegpt/training/mlflow_logging.py): a pyfunc whose "checkpoint"
    # artifact is the checkpoint folder, stored under artifacts/<folder name>.
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("inference-test")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_Passthrough(),
            artifacts={"checkpoint": str(posing_checkpoint_dir)},
            pip_requirements=[],
            registered_model_name="posegpt-inference-pyfunc",
        )
    for uri in (
        f"models:/posegpt-inference-pyfunc/{info.registered_model_version}",
        "models:/posegpt-inference-pyfunc/latest",
    ):
        model = PoseGPT.from_checkpoint(uri, tracking_uri=mlflow_server, cache_dir=tmp_path)
        assert model.chat(POSING_SAMPLES[0]["prompt"]).text == POSING_SAMPLES[0]["answer"]
    with pytest.raises(FileNotFoundError, match="cannot fetch models:/posegpt-inference-test/99"):
        PoseGPT.from_checkpoint(
            "models:/posegpt-inference-test/99", tracking_uri=mlflow_server, cache_dir=tmp_path
        )
