"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI chat API over PoseGPT.

Requests take OpenAI's shape: ``messages`` whose ``content`` is a string or a list of
``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``
parts (one image, in the first user message; the service never fetches URLs),
``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``seed``, ``stream``.
Fields this model has no use for (``top_p``, ``user``, ``tools``...) are ignored; ``n``
other than 1 is refused.

Answers are ``chat.completion`` objects. Poses come in the extension field
``choices[i].poses``: the same objects as ``/v1/chat``'s ``poses`` (axis-angle, joints,
mesh URLs, and the ``id`` that gives a pose back). Poses go *to* the model the same way: a
message may carry the extension field ``poses`` (72 floats or an id per ``<POSE_IN>``), which
OpenAI's client sends as it is (messages are plain dicts). With ``stream: true`` the answer is sent as server-sent events
(``chat.completion.chunk`` objects, then ``data: [DONE]``): the role first, then the
text in pieces, then a last chunk with ``finish_reason`` and ``poses``, then usage when
``stream_options.include_usage`` is set. The model decodes a whole batch before any
text of it is known, so the pieces follow each other at once after decoding.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve.limits import RequestRejected
from serve.schemas import POSES_HELP, SEED_MAX, Pose, PoseRef
from serve.settings import MAX_LIST_ITEMS, MAX_TEXT_CHARS

MODEL_ID = "posegpt"
"""The ``model`` of every answer and the one entry of ``/v1/models``."""

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


class _Lenient(BaseModel):
    # OpenAI clients send fields this service ignores; unknown ones are dropped, not refused.
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Lenient):
    url: str = Field(description="A data:image/png|jpeg|webp;base64,... URL (nothing is fetched).")
    detail: str | None = None


class ContentPart(_Lenient):
    type: Literal["text", "image_url"]
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    image_url: ImageURL | None = None


class CompletionMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
        | Annotated[list[ContentPart], Field(max_length=MAX_LIST_ITEMS)]
        | None
    ) = None
    poses: list[PoseRef] | None = Field(
        None,
        max_length=MAX_LIST_ITEMS,
        description="Extension, as /v1/chat's messages[].poses: " + POSES_HELP,
    )


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    model: str = Field(MODEL_ID, max_length=200, description="Any name: this service serves one model.")
    messages: list[CompletionMessage] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Takes precedence over max_tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    n: int = Field(1, ge=1, le=1, description="One answer per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class CompletionChoice(BaseModel):
    index: int
    message: CompletionChoiceMessage
    finish_reason: Literal["stop", "length"]
    poses: list[Pose] = Field(
        description="Extension: the SMPL poses of the answer, one per <POSE> in its text, as in /v1/chat."
    )


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "posegpt"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def to_conversation(req: ChatCompletionRequest) -> tuple[list[dict[str, Any]], str | None]:
    """(``/v1/chat`` messages, the data URL of the image or None) from OpenAI messages.

    ``developer`` is OpenAI's newer name for ``system``. Text parts of one message are
    joined with line breaks; the image must be in the first user message.
    """
    messages: list[dict[str, str]] = []
    image: str | None = None
    first_user = next((i for i, m in enumerate(req.messages) if m.role == "user"), None)
    for i, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        extra: dict[str, Any] = {"poses": m.poses} if m.poses else {}
        if m.content is None or isinstance(m.content, str):
            messages.append({"role": role, "content": m.content or "", **extra})
            continue
        texts = []
        for k, part in enumerate(m.content):
            where = f"messages[{i}].content[{k}]"
            if part.type == "text":
                texts.append(part.text or "")
                continue
            if part.image_url is None:
                raise RequestRejected(
                    422, "invalid_request", f"{where}: an image_url part needs image_url.url"
                )
            if i != first_user or image is not None:
                raise RequestRejected(
                    422, "invalid_request", f"{where}: one image per conversation, in the first user message"
                )
            image = part.image_url.url
        messages.append({"role": role, "content": "\n".join(texts), **extra})
    return messages, image


def completion(request_id: str, answer: dict[str, Any]) -> ChatCompletion:
    usage = answer["usage"]
    return ChatCompletion(
        id=f"chatcmpl-{request_id}",
        created=int(time.time()),
        model=MODEL_ID,
        choices=[
            CompletionChoice(
                index=0,
                message=CompletionChoiceMessage(content=answer["text"]),
                finish_reason=FINISH[answer["finish_reason"]],
                poses=answer["poses"],
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
        ),
    )


_PIECE = re.compile(r"\S+\s*|\s+")


def stream_events(done: ChatCompletion, include_usage: bool) -> Iterator[str]:
    """Server-sent events of a finished completion, in the order OpenAI's streaming API sends them."""
    choice = done.choices[0]

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        chunk: dict[str, Any] = {
            "id": done.id,
            "object": "chat.completion.chunk",
            "created": done.created,
            "model": done.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
        }
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in _PIECE.findall(choice.message.content):
        yield event({"content": piece})
    yield event({}, choice.finish_reason, poses=[p.model_dump(mode="json") for p in choice.poses])
    if include_usage:
        usage = {
            "id": done.id,
            "object": "chat.completion.chunk",
            "created": done.created,
            "model": done.model,
            "choices": [],
            "usage": done.usage.model_dump(),
        }
        yield f"data: {json.dumps(usage, separators=(',', ':'))}\n\n"
    yield "data: [DONE]\n\n"


__all__ = [
    "MODEL_ID",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ModelList",
    "completion",
    "stream_events",
    "to_conversation",
]
