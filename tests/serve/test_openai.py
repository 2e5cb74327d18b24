"""``POST /v1/chat/completions`` through the real ``openai`` Python client against the running service.

The answers must be the ones ``/v1/chat`` gives for the same conversation (the
``posing_checkpoint_dir`` model answers its prompts with their trained text), with the
poses in the extension field ``choices[0].poses``, streamed or not.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.model import POSING_SAMPLES
from tests.fixtures.serving import Served
from tests.serve.images import data_url, png_bytes

pytestmark = pytest.mark.slow

STANDING, TWO, DESCRIBE = (s["prompt"] for s in POSING_SAMPLES)
ANSWERS = {s["prompt"]: s["answer"] for s in POSING_SAMPLES}


@pytest.fixture(scope="module")
def openai_client(served: Served) -> Any:
    import openai

    with openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key, max_retries=0, timeout=120) as c:
        yield c


def native(served: Served, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{served.url}/v1/chat", json=body, headers=served.headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_plain_answer_with_poses_in_the_extension_field(openai_client: Any, served: Served) -> None:
    done = openai_client.chat.completions.create(
        model="posegpt", messages=[{"role": "user", "content": TWO}], max_tokens=24
    )
    (choice,) = done.choices
    assert choice.message.role == "assistant" and choice.message.content == ANSWERS[TWO]
    assert choice.finish_reason == "stop"
    poses = choice.model_extra["poses"]
    assert len(poses) == 2 and all(len(p["axis_angle"]) == 72 for p in poses)
    # The same poses as the native endpoint gives for the same conversation.
    reference = native(served, messages=[{"role": "user", "content": TWO}], max_new_tokens=24)
    for got, want in zip(poses, reference["poses"], strict=True):
        np.testing.assert_allclose(got["axis_angle"], want["axis_angle"], atol=1e-4)
    assert done.usage.completion_tokens == reference["usage"]["completion_tokens"]
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.id.startswith("chatcmpl-") and done.object == "chat.completion"
    # The mesh of a pose is served like any other.
    mesh = httpx.get(served.url + poses[0]["mesh"]["obj_url"], headers=served.headers, timeout=30)
    assert mesh.status_code == 200
    assert sum(line.startswith("v ") for line in mesh.text.splitlines()) == 6890


def test_streamed_answer(openai_client: Any) -> None:
    stream = openai_client.chat.completions.create(
        model="posegpt",
        messages=[{"role": "user", "content": STANDING}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWERS[STANDING]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # in pieces
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    (final,) = finals
    assert final.choices[0].finish_reason == "stop"
    assert len(final.choices[0].model_extra["poses"]) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[0].choices[0].delta.role == "assistant"


def test_image_question_and_multi_part_content(openai_client: Any, served: Served) -> None:
    image = png_bytes(64, 48, noise=True)
    done = openai_client.chat.completions.create(
        model="posegpt",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": DESCRIBE},
                    {"type": "image_url", "image_url": {"url": data_url(image)}},
                ],
            }
        ],
        max_tokens=16,
    )
    reference = native(
        served, messages=[{"role": "user", "content": DESCRIBE}], image=data_url(image), max_new_tokens=16
    )
    assert done.choices[0].message.content == reference["text"]
    assert done.usage.prompt_tokens == reference["usage"]["prompt_tokens"]  # the image tokens were counted


def test_errors_come_back_as_api_errors(openai_client: Any) -> None:
    import openai

    with pytest.raises(openai.UnprocessableEntityError) as info:
        openai_client.chat.completions.create(
            model="posegpt",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
                }
            ],
        )
    assert info.value.body["code"] == "image_url_not_allowed"
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.chat.completions.create(
            model="posegpt", messages=[{"role": "user", "content": "hi"}], n=2
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=openai_client.base_url, api_key="wrong", max_retries=0
        ).chat.completions.create(model="posegpt", messages=[{"role": "user", "content": "hi"}])
    assert [m.id for m in openai_client.models.list()] == ["posegpt"]
