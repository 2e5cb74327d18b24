"""Request and response models of the HTTP API (they make the OpenAPI schema at ``/docs``).

Requests forbid unknown fields, so a misspelt option (``max_tokens``) is an error
rather than silently ignored. Sizes that depend on configuration (message count
and length, image size, batch size, token limit) are checked by the ingress
against ``LimitsConfig``, so that the error names the limit.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve.settings import MAX_LIST_ITEMS, MAX_TEXT_CHARS

SEED_MAX = 2**63 - 1
"""Seeds are non-negative 64-bit integers (the sampler's ``torch.Generator`` takes no more)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


PoseRef = Annotated[list[float], Field(max_length=MAX_LIST_ITEMS)] | Annotated[str, Field(max_length=64)]
"""A pose given to the model: 72 axis-angle floats (radians), or the ``id`` of a pose the service answered."""

POSES_HELP = (
    "Poses this user turn gives the model, one per <POSE_IN> in its content, in order: 72 SMPL axis-angle "
    "floats each, or the id of a pose an earlier answer returned. A content without <POSE_IN> gets them "
    "in front of its text."
)


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant"]
    """``system`` may come first; then turns alternate user / assistant, ending with user."""
    content: str = Field(max_length=MAX_TEXT_CHARS)
    poses: list[PoseRef] | None = Field(None, max_length=MAX_LIST_ITEMS, description=POSES_HELP)


class DecodingOptions(_Request):
    max_new_tokens: int | None = Field(
        None, ge=1, description="Most tokens to generate (server default if empty)."
    )
    temperature: float | None = Field(
        None,
        ge=0.0,
        le=5.0,
        description="0: greedy; > 0: sampling. Below 0.001, greedy (sampling's limit as the temperature goes to 0).",
    )
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="Seed for sampling (reproducible answers), 0 to 2^63 - 1."
    )
    include_vertices: bool = Field(False, description="Also return the 6890 mesh vertices of every pose.")


DETECT_HELP = (
    "Find the people in the image with the service's person detector and answer for each person's crop "
    "(needs an image); the answer then lists the people with their boxes."
)


class ChatRequest(DecodingOptions):
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=MAX_LIST_ITEMS,
        description="The conversation so far, ending with a user turn.",
    )
    image: str | None = Field(
        None, description="Optional image for the first user turn: base64 or a data:image/...;base64 URL."
    )
    detect: bool = Field(False, description=DETECT_HELP)


class PoseQuery(_Request):
    text: str = Field(
        max_length=MAX_TEXT_CHARS, description="One user message, e.g. 'Show me a person doing a lunge.'"
    )
    image: str | None = Field(None, description="Optional image as base64 or a data:image/...;base64 URL.")
    detect: bool = Field(False, description=DETECT_HELP)
    poses: list[PoseRef] | None = Field(None, max_length=MAX_LIST_ITEMS, description=POSES_HELP)


class PosesRequest(DecodingOptions):
    queries: list[PoseQuery] = Field(
        min_length=1, max_length=MAX_LIST_ITEMS, description="Independent queries, answered in order."
    )


class Mesh(BaseModel):
    obj_url: str
    """Wavefront OBJ of the posed body (kept for recent answers only)."""
    png_url: str
    """Front and side views of the body."""
    vertices: list[list[float]] | None = None
    """(6890, 3) vertices in metres, camera frame (x right, y down, z forward), when asked for."""


class Pose(BaseModel):
    id: str = Field(description="Gives this pose back to the model in a later request (a message's poses).")
    axis_angle: list[float] = Field(description="72 SMPL pose values: 24 joints × axis-angle (radians).")
    joints: list[list[float]] = Field(description="24 joint positions in metres (body with betas 0).")
    mesh: Mesh


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Timings(BaseModel):
    total_ms: float
    """Time in the ingress, from parsed request to response."""
    queue_ms: float
    """Wait on the model replica before the batch started."""
    generate_ms: float
    """Decoding time of the batch this query was part of."""
    batch_size: int
    """Number of queries decoded together with this one (itself included)."""
    replica: str
    """Model replica that answered."""
    detect_ms: float | None = None
    """Person detection and cropping time (``detect`` requests only)."""


class Person(BaseModel):
    box: list[float]
    """``[x0, y0, x1, y1]`` of the person in the sent image, in pixels."""
    score: float
    """The detector's confidence."""
    text: str
    """The model's answer for this person's crop."""
    poses: list[Pose]
    """The poses of that answer."""


class Answer(BaseModel):
    text: str
    """The answer, ``<POSE>`` kept where the model put a pose."""
    finish_reason: Literal["eos", "stop", "length"]
    poses: list[Pose]
    usage: Usage
    timings: Timings
    people: list[Person] | None = None
    """With ``detect``: one entry per person found, best score first; ``poses`` lists theirs in that order."""


class ChatResponse(Answer):
    request_id: str


class PosesResponse(BaseModel):
    request_id: str
    results: list[Answer]
    """One answer per query, in query order."""
    total_ms: float


class ErrorBody(BaseModel):
    code: str
    """``limit_exceeded``, ``invalid_request``, ``invalid_image``, ``image_url_not_allowed``,
    ``invalid_input``, ``unknown_pose``, ``unauthorized``, ``not_found``, ``overloaded``, ``detector_unavailable`` or ``internal``."""
    message: str
    limit: str | None = None
    """The configured limit that was exceeded (``limits.<name>``)."""
    value: int | float | None = None
    maximum: int | float | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str


class Health(BaseModel):
    status: Literal["ok", "loading", "busy"]
    """``ok``; ``loading`` until a model replica has answered once; ``busy`` when it does not answer in time."""
    model: dict | None = None
    """Replica, checkpoint, device and batching of the model replica that answered."""


class BodyTopology(BaseModel):
    faces: list[list[int]]
    """(F, 3) triangles indexing the vertices of every returned mesh."""
    parts: list[int]
    """Per vertex, the SMPL joint (0-23) whose skinning weight dominates: the body part."""
    part_colors: list[list[float]]
    """(24, 3) RGB in [0, 1] per body part, as in the server's PNGs."""


__all__ = [
    "Answer",
    "BodyTopology",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "ErrorBody",
    "ErrorResponse",
    "Health",
    "Mesh",
    "Person",
    "Pose",
    "PoseQuery",
    "PoseRef",
    "PosesRequest",
    "PosesResponse",
    "Timings",
    "Usage",
]
