"""The HTTP ingress: FastAPI routes, request checks, the mesh cache and the web page.

Routes (relative to the application's route prefix):

* ``POST /v1/chat``: a conversation (and an optional inline image) → the answer and its poses.
* ``POST /v1/poses``: independent queries → one answer each, in order; every query is
  a separate call to the model deployment, so they spread over replicas and batches.
* ``GET /v1/poses/{id}/mesh.obj`` / ``mesh.png``: the body of a recent answer.
* ``GET /v1/body``: faces and body parts shared by every mesh (for the page's viewer).
* ``POST /v1/chat/completions``, ``GET /v1/models``: the OpenAI chat API (``serve/openai_api.py``).
* ``GET /healthz``: 200 once a model replica answers, 503 before (open without the key;
  model details only for callers with the key).
* ``GET /``: the web page; ``/static/*`` its script and style; ``/docs`` the OpenAPI page;
  ``/login`` the sign-in form that gives a browser a session cookie when a key is set.

With ``detect: true`` (chat or a pose query) and an image, the ingress asks the
``PersonDetector`` deployment (``serve/detector.py``) for the people and their crops,
asks the model once per crop, and answers with one entry per person (box, text, poses).

Everything that can be checked is checked here, before any model batch: sizes,
Unicode, the conversation's shape, and each image (type, header, and one bounded
decode, in a worker thread so the event loop keeps serving). A request makes at most
``limits.max_model_calls`` model queries (queries × detected people).

The FastAPI app is built per replica (``__serve_build_asgi_app__``), after the
constructor has read the API key, so the key middleware is part of the app from
its first request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posegpt.config import from_dict
from posegpt.data.schema import check_pose
from posegpt.model.conversation import POSE_INPUT_PLACEHOLDER, normalize_messages
from posegpt.storage import is_s3
from serve import openai_api
from serve.auth import (
    PAGES,
    SESSION_COOKIE,
    SESSION_TTL_S,
    BearerKeyMiddleware,
    key_matches,
    load_api_key,
    route_path,
    session_token,
)
from serve.errors import error_response, request_id_from_scope
from serve.limits import (
    BodyGuardMiddleware,
    RequestRejected,
    check_at_most,
    check_texts,
    decode_inline_image,
    over_limit,
    verify_image,
)
from serve.mesh_cache import CachedBody, MeshCache
from serve.pose_store import owner_of, store_actor
from serve.schemas import (
    Answer,
    BodyTopology,
    ChatRequest,
    ChatResponse,
    DecodingOptions,
    ErrorResponse,
    Health,
    Mesh,
    Person,
    Pose,
    PosesRequest,
    PosesResponse,
    Timings,
    Usage,
)
from serve.settings import ServeConfig

logger = logging.getLogger("ray.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page may load nothing from outside the service."""

HEALTH_TIMEOUT_S = 2.0
MIN_SAMPLING_TEMPERATURE = 1e-3
"""Temperatures in (0, this) decode greedily: sampling's limit as the temperature goes to 0, and
dividing logits by 1e-40 would overflow float32 to inf (then NaN probabilities)."""
LOGIN_CSP = (
    "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class ModelFailure(Exception):
    """The model failed on a request (already logged with its traceback where it happened)."""


def _severity(exc: BaseException) -> int:
    if isinstance(exc, ModelFailure):
        return 3
    if isinstance(exc, RequestRejected) and exc.code == "overloaded":
        return 2
    return 1


def route_template(path: str) -> str:
    """A path with its mesh id replaced, for metric tags (ids would make one series per answer)."""
    parts = path.split("/")
    if len(parts) == 5 and parts[1:3] == ["v1", "poses"]:
        return f"/v1/poses/{{id}}/{parts[4]}"
    known = ("/", "/v1/chat", "/v1/poses", "/v1/chat/completions", "/v1/models", "/v1/body", "/healthz")
    if path in known or path in ("/login", "/docs", "/redoc", "/openapi.json") or path.startswith("/static/"):
        return path
    return "other"


class _CatchAll:
    """Answers an unexpected exception with a JSON 500 carrying the request id, logged once here.

    Also puts ``X-Content-Type-Options: nosniff`` on every response (no browser may guess a
    type for an OBJ, a PNG or an error) and counts responses by route and status.
    """

    def __init__(self, app: ASGIApp, responses: Any) -> None:
        self.app = app
        self.responses = responses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
                self.responses.inc(
                    tags={"route": route_template(route_path(scope)), "status": str(message["status"])}
                )
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            request_id = request_id_from_scope(scope)
            logger.exception("request %s failed in the ingress", request_id)
            if started:
                raise
            response = error_response(500, "internal", "internal error; quote the request id", request_id)
            await response(scope, receive, send)


@serve.deployment(name="PoseIngress")
@serve.ingress()
class PoseIngress:
    """HTTP front of the application; holds a handle to the model deployment."""

    def __init__(self, model: DeploymentHandle, detector: DeploymentHandle, settings: dict[str, Any]) -> None:
        from ray.serve.metrics import Counter

        from posegpt.runtime import setup_environment

        cfg = from_dict(ServeConfig, settings)
        setup_environment(cfg.cache_dir)
        self.cfg = cfg
        self.model = model
        self.detector = detector
        self.responses = Counter(
            "posegpt_http_responses_total",
            description="HTTP responses of the ingress by route and status code.",
            tag_keys=("route", "status"),
        )
        # The entry point reads the environment (library code never does): the key's source is configured.
        self.api_key = load_api_key(cfg, os.environ)
        self.cache = MeshCache(cfg.mesh_cache_size)
        self.owner = owner_of(self.api_key)
        self.pose_store = store_actor(
            cfg.pose_store.name or serve.get_replica_context().app_name,
            cfg.pose_store.capacity,
            cfg.pose_store.ttl_s,
        )
        self._topology: dict[str, Any] | None = None
        self._topology_json: bytes | None = None
        self._topology_lock = asyncio.Lock()
        self._model_seen = False
        self._page = (STATIC_DIR / "index.html").read_text()
        self._login = (STATIC_DIR / "login.html").read_text()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)

    # -- model calls --------------------------------------------------------------------------

    async def ask(self, query: dict[str, Any], where: str) -> dict[str, Any]:
        """One query to the model deployment; failures become ``RequestRejected`` or ``ModelFailure``."""
        try:
            result = await self.model.answer.remote(query)
        except BackPressureError as exc:
            raise _overloaded(exc) from exc
        except Exception as exc:
            # The replica died or could not be reached: nothing logged it yet.
            logger.exception("request %s: the model call failed", query.get("request_id"))
            raise ModelFailure(str(query.get("request_id"))) from exc
        error = result.get("error")
        if error is None:
            return result
        if error["code"] == "invalid_input":
            raise RequestRejected(422, "invalid_input", f"{where}: {error['message']}")
        raise ModelFailure(str(query.get("request_id")))

    async def topology(self) -> dict[str, Any]:
        if self._topology is None:
            async with self._topology_lock:
                if self._topology is None:
                    self._topology = await self.model.body_topology.remote()
        return self._topology

    # -- request handling ---------------------------------------------------------------------

    def _decoding(self, req: DecodingOptions) -> dict[str, Any]:
        gen = self.cfg.generation
        max_new = req.max_new_tokens if req.max_new_tokens is not None else gen.max_new_tokens
        check_at_most("max_new_tokens", max_new, self.cfg.limits, "max_new_tokens")
        temperature = req.temperature if req.temperature is not None else gen.temperature
        if temperature < MIN_SAMPLING_TEMPERATURE:
            temperature = 0.0
        return {"max_new_tokens": max_new, "temperature": temperature, "seed": req.seed}

    def _check_image(self, data: str, where: str) -> bytes:
        raw = decode_inline_image(data, self.cfg.limits, where)
        verify_image(raw, self.cfg.limits, where)
        return raw

    async def _image(self, data: str | None, where: str) -> bytes | None:
        """Checked image bytes: base64, type, header and one bounded decode, in a worker thread."""
        return None if data is None else await asyncio.to_thread(self._check_image, data, where)

    @staticmethod
    def _check_conversation(messages: list[dict[str, str]], has_image: bool, where: str) -> None:
        """The conversation checks the model makes, made here so a bad one never reaches a batch."""
        try:
            _, turns = normalize_messages(messages, has_image=has_image, where=where)
        except ValueError as exc:
            raise RequestRejected(422, "invalid_input", str(exc)) from exc
        if turns[-1].role != "user":
            raise RequestRejected(
                422, "invalid_input", f"{where}: the conversation must end with a user turn to be answered"
            )

    async def given_poses(
        self, messages: list[dict[str, Any]], names: list[str]
    ) -> tuple[list[dict[str, str]], list[list[float]] | None]:
        """The conversation for the model (``<POSE_IN>`` where each given pose goes) and its poses in
        order, ids looked up in the pose store. ``names``: each message as errors name it. Every pose is
        checked here, before any batch: a wrong length, NaN/inf or a rotation beyond 2π is refused naming
        ``<name>.poses[k]``, and so is an id that is unknown, expired or another API key's (one message
        for all three, so an id never tells whether another key's pose exists)."""
        out: list[dict[str, str]] = []
        refs: list[tuple[str, list[float] | str]] = []
        for m, name in zip(messages, names, strict=True):
            content, poses = m["content"], m.get("poses") or []
            found = content.count(POSE_INPUT_PLACEHOLDER)
            if poses and m["role"] != "user":
                raise RequestRejected(422, "invalid_input", f"{name}.poses: poses are given in user turns")
            if poses and found == 0:
                content = " ".join([POSE_INPUT_PLACEHOLDER] * len(poses) + [content])
            elif found != len(poses):
                raise RequestRejected(
                    422,
                    "invalid_input",
                    f"{name}: its content holds {found} {POSE_INPUT_PLACEHOLDER} but {len(poses)} poses "
                    f"are given (one per {POSE_INPUT_PLACEHOLDER}, in order)",
                )
            refs.extend((f"{name}.poses[{k}]", p) for k, p in enumerate(poses))
            out.append({"role": m["role"], "content": content})
        if not refs:
            return out, None
        check_at_most(
            "max_input_poses",
            len(refs),
            self.cfg.limits,
            "the number of poses given" + (f" in {names[0]}" if len(names) == 1 else ""),
        )
        ids = [(name, ref) for name, ref in refs if isinstance(ref, str)]
        stored = await self.pose_store.get.remote(self.owner, [ref for _, ref in ids]) if ids else []
        by_id = dict(zip([name for name, _ in ids], stored, strict=True))
        values = []
        for name, ref in refs:
            pose = by_id[name] if isinstance(ref, str) else ref
            if pose is None:
                raise RequestRejected(
                    422,
                    "unknown_pose",
                    f"{name}: no pose {ref!r} (unknown or expired; ids are kept for "
                    f"{self.cfg.pose_store.ttl_s:g} s and only for the API key that got them)",
                )
            reason = check_pose(pose, name)
            if reason:
                raise RequestRejected(422, "invalid_input", reason)
            values.append([float(x) for x in pose])
        return out, values

    async def remember(self, answers: list[dict[str, Any]]) -> None:
        """Keep every answered pose under its id, for this API key, so later requests can give it back."""
        pairs = [(p.id, p.axis_angle) for a in answers for p in a["poses"]]
        if pairs:
            await self.pose_store.put.remote(self.owner, pairs)

    def _answer(
        self, result: dict[str, Any], include_vertices: bool, root: str, started: float
    ) -> dict[str, Any]:
        poses = []
        for k in range(len(result["poses"])):
            vertices = result["vertices"][k]
            body_id = self.cache.add(result["poses"][k], vertices)
            base = f"{root}/v1/poses/{body_id}"
            poses.append(
                Pose(
                    id=body_id,
                    axis_angle=[float(x) for x in result["poses"][k]],
                    joints=np.asarray(result["joints"][k], np.float64).tolist(),
                    mesh=Mesh(
                        obj_url=f"{base}/mesh.obj",
                        png_url=f"{base}/mesh.png",
                        vertices=np.round(np.asarray(vertices, np.float64), 5).tolist()
                        if include_vertices
                        else None,
                    ),
                )
            )
        t = result["timings"]
        return {
            "text": result["text"],
            "finish_reason": result["finish_reason"],
            "poses": poses,
            "usage": Usage(
                prompt_tokens=result["prompt_tokens"], completion_tokens=result["completion_tokens"]
            ),
            "timings": Timings(
                total_ms=(time.perf_counter() - started) * 1000.0,
                queue_ms=t["queue_ms"],
                generate_ms=t["generate_ms"],
                batch_size=t["batch_size"],
                replica=t["replica"],
            ),
        }

    async def chat(self, req: ChatRequest, request_id: str, root: str) -> ChatResponse:
        started = time.perf_counter()
        answer = await self.converse(
            [m.model_dump(exclude_none=True) for m in req.messages],
            req.image,
            self._decoding(req),
            req.detect,
            req.include_vertices,
            request_id,
            root,
            started,
        )
        return ChatResponse(request_id=request_id, **answer)

    async def converse(
        self,
        messages: list[dict[str, Any]],
        image: str | None,
        decoding: dict[str, Any],
        detect: bool,
        include_vertices: bool,
        request_id: str,
        root: str,
        started: float,
    ) -> dict[str, Any]:
        """The answer fields for one conversation (``/v1/chat`` and ``/v1/chat/completions``)."""
        limits = self.cfg.limits
        check_at_most("max_messages", len(messages), limits, "the number of messages")
        check_texts([m["content"] for m in messages], limits, "messages")
        messages, poses = await self.given_poses(messages, [f"messages[{i}]" for i in range(len(messages))])
        self._check_conversation(messages, image is not None, "messages")
        query = {
            "messages": messages,
            "poses": poses,
            "image": await self._image(image, "image"),
            "request_id": request_id,
            **decoding,
        }
        (plan,) = await self.plan([(query, detect, "messages")])
        (answer,) = await self.execute([plan], include_vertices, root, started)
        return answer

    async def poses(self, req: PosesRequest, request_id: str, root: str) -> PosesResponse:
        started = time.perf_counter()
        limits = self.cfg.limits
        check_at_most("max_batch_queries", len(req.queries), limits, "the number of queries")
        check_texts([q.text for q in req.queries], limits, "queries.text")
        decoding = self._decoding(req)
        images = await asyncio.gather(
            *(self._image(q.image, f"queries[{i}].image") for i, q in enumerate(req.queries))
        )
        queries = []
        for i, q in enumerate(req.queries):
            given = [{"role": "user", "content": q.text, "poses": q.poses}]
            messages, poses = await self.given_poses(given, [f"queries[{i}]"])
            self._check_conversation(messages, images[i] is not None, f"queries[{i}]")
            query = {
                "messages": messages,
                "poses": poses,
                "image": images[i],
                "request_id": f"{request_id}/{i}",
                **decoding,
            }
            queries.append((query, q.detect, f"queries[{i}]"))
        plans = await self.plan(queries)
        results = [Answer(**a) for a in await self.execute(plans, req.include_vertices, root, started)]
        return PosesResponse(
            request_id=request_id, results=results, total_ms=(time.perf_counter() - started) * 1000.0
        )

    async def plan(self, queries: list[tuple[dict[str, Any], bool, str]]) -> list[dict[str, Any]]:
        """For each query, the model queries it needs: itself, or (``detect``) one per person found.

        Refuses the request (422) when the total exceeds ``limits.max_model_calls``.
        """
        limits = self.cfg.limits

        async def one(query: dict[str, Any], detect: bool, where: str) -> dict[str, Any]:
            if not detect:
                return {"where": where, "asks": [query], "people": None}
            if query["image"] is None:
                raise RequestRejected(422, "invalid_request", f"{where}: detect needs an image")
            t0 = time.perf_counter()
            people = (await self.detect_people(query["image"], f"{where}: image", query["request_id"]))[
                : limits.max_people
            ]
            asks = [
                {**query, "image": person["crop"], "request_id": f"{query['request_id']}/person{k}"}
                for k, person in enumerate(people)
            ]
            return {
                "where": where,
                "asks": asks,
                "people": people,
                "detect_ms": (time.perf_counter() - t0) * 1000.0,
            }

        plans = await _gather_or_worst(one(*q) for q in queries)
        calls = sum(len(p["asks"]) for p in plans)
        if calls > limits.max_model_calls:
            raise over_limit(
                "max_model_calls",
                calls,
                limits.max_model_calls,
                "the model queries of this request (queries, times the people found with detect)",
            )
        return plans

    async def execute(
        self, plans: list[dict[str, Any]], include_vertices: bool, root: str, started: float
    ) -> list[dict[str, Any]]:
        """Every planned model query at once; the answer fields of each plan, in order."""
        flat = [(k, ask) for k, plan in enumerate(plans) for ask in plan["asks"]]
        results = await _gather_or_worst(self.ask(ask, plans[k]["where"]) for k, ask in flat)
        answers: list[list[dict[str, Any]]] = [[] for _ in plans]
        for (k, _), result in zip(flat, results, strict=True):
            answers[k].append(self._answer(result, include_vertices, root, started))
        out = []
        for plan, plan_answers in zip(plans, answers, strict=True):
            if plan["people"] is None:
                out.append(plan_answers[0])
            else:
                out.append(merge_people(plan["people"], plan_answers, plan["detect_ms"], started))
        await self.remember(out)
        return out

    async def detect_people(self, image: bytes, where: str, request_id: str) -> list[dict[str, Any]]:
        """``{"box", "score", "crop"}`` of every person the detector deployment finds, best score first."""
        try:
            result = await self.detector.detect.remote(image, where, request_id)
        except BackPressureError as exc:
            raise _overloaded(exc) from exc
        except Exception as exc:
            logger.exception("request %s: the detector call failed", request_id)
            raise ModelFailure(request_id) from exc
        error = result.get("error")
        if error is not None:
            raise RequestRejected(error["status"], error["code"], f"{where}: {error['message']}")
        return result["people"]

    def _cached(self, body_id: str) -> CachedBody:
        body = self.cache.get(body_id)
        if body is None:
            raise RequestRejected(
                404, "not_found", f"no body {body_id!r}: meshes are kept for recent answers only (ask again)"
            )
        return body

    async def mesh_obj(self, body_id: str) -> str:
        from posegpt.render import mesh_to_obj

        body = self._cached(body_id)
        if body.obj is None:
            faces = (await self.topology())["faces"]
            body.obj = await asyncio.to_thread(mesh_to_obj, body.vertices, faces)
        return body.obj

    async def mesh_png(self, body_id: str) -> bytes:
        from posegpt.render import encode_png, render_views

        body = self._cached(body_id)
        if body.png is None:
            topo = await self.topology()

            def draw() -> bytes:
                image = render_views(
                    body.vertices, topo["faces"], topo["face_colors"], size=self.cfg.png_size
                )
                return encode_png(image)

            # Rendering takes tens of milliseconds: off the event loop.
            body.png = await asyncio.to_thread(draw)
        return body.png

    async def body_json(self) -> bytes:
        if self._topology_json is None:
            topo = await self.topology()
            model = BodyTopology(
                faces=topo["faces"].tolist(),
                parts=topo["parts"].tolist(),
                part_colors=topo["part_colors"].tolist(),
            )
            self._topology_json = model.model_dump_json().encode()
        return self._topology_json

    async def health(self, authorized: bool) -> tuple[int, Health]:
        """Readiness; the model's details only for ``authorized`` callers (or an open service)."""
        status, health = await self._health()
        if health.model is not None:
            if self.api_key is not None and not authorized:
                health.model = None
            else:
                health.model = {**health.model, "checkpoint": public_source(health.model["checkpoint"])}
        return status, health

    async def _health(self) -> tuple[int, Health]:
        response = self.model.info.remote()
        try:
            info = await asyncio.wait_for(_await(response), timeout=HEALTH_TIMEOUT_S)
        except TimeoutError:
            response.cancel()
            return 503, Health(status="busy" if self._model_seen else "loading")
        except Exception as exc:
            logger.warning("health check: the model deployment did not answer: %s", exc)
            return 503, Health(status="busy" if self._model_seen else "loading")
        self._model_seen = True
        return 200, Health(status="ok", model=info)

    def page(self, root: str) -> str:
        return self._page.replace("{{ROOT}}", root)

    def login_page(self, root: str, next_path: str, message: str = "") -> str:
        return (
            self._login.replace("{{ROOT}}", root)
            .replace("{{NEXT}}", next_path)
            .replace("{{MESSAGE}}", message)
        )


def public_source(checkpoint: str) -> str:
    """A checkpoint as health details show it: URIs as they are, a local folder by its name only."""
    if is_s3(checkpoint) or "://" in checkpoint or checkpoint.startswith("models:/"):
        return checkpoint
    return Path(checkpoint).name


def _overloaded(exc: BackPressureError) -> RequestRejected:
    retry = exc.retry_after_s
    return RequestRejected(
        exc.status_code,
        "overloaded",
        "the service is at capacity; retry shortly",
        headers={"Retry-After": str(int(np.ceil(retry)))} if retry else {"Retry-After": "1"},
    )


async def _gather_or_worst(awaitables: Any) -> list[Any]:
    """All results, or the most severe of the failures (a model failure over an overload over a refusal)."""
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise max(failures, key=_severity)
    return list(outcomes)


def merge_people(
    people: list[dict[str, Any]], answers: list[dict[str, Any]], detect_ms: float, started: float
) -> dict[str, Any]:
    """One answer from the answers for each person's crop: a line of text and an entry per person."""
    total_ms = (time.perf_counter() - started) * 1000.0
    if not answers:
        return {
            "text": "No person found in the image.",
            "finish_reason": "eos",
            "poses": [],
            "usage": Usage(prompt_tokens=0, completion_tokens=0),
            "timings": Timings(
                total_ms=total_ms,
                queue_ms=0.0,
                generate_ms=0.0,
                batch_size=0,
                replica="",
                detect_ms=detect_ms,
            ),
            "people": [],
        }
    timings = [a["timings"] for a in answers]
    reasons = [a["finish_reason"] for a in answers]
    return {
        "text": "\n".join(f"Person {k + 1}: {a['text']}" for k, a in enumerate(answers)),
        "finish_reason": "length" if "length" in reasons else reasons[0],
        "poses": [p for a in answers for p in a["poses"]],
        "usage": Usage(
            prompt_tokens=sum(a["usage"].prompt_tokens for a in answers),
            completion_tokens=sum(a["usage"].completion_tokens for a in answers),
        ),
        "timings": Timings(
            total_ms=total_ms,
            queue_ms=max(t.queue_ms for t in timings),
            generate_ms=max(t.generate_ms for t in timings),
            batch_size=max(t.batch_size for t in timings),
            replica=timings[0].replica,
            detect_ms=detect_ms,
        ),
        "people": [
            Person(
                box=[round(float(v), 2) for v in person["box"]],
                score=round(float(person["score"]), 4),
                text=a["text"],
                poses=a["poses"],
            )
            for person, a in zip(people, answers, strict=True)
        ],
    }


async def _await(response: Any) -> Any:
    return await response


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _rid(request: Request) -> str:
    return request_id_from_scope(request.scope)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 500, 503)
}


class _ThreadJSONRequest(Request):
    """Parses the JSON body in a worker thread: 8 MB of small objects take most of a second to parse,
    which on the event loop would stall every other request of the replica (``/healthz`` too)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await asyncio.to_thread(json.loads, body)
        return self._json


class _ThreadJSONRoute(APIRoute):
    """FastAPI's documented hook for a custom ``Request`` class: every route parses JSON off the loop."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_ThreadJSONRequest(request.scope, request.receive))

        return route_handler


def build_api(service: PoseIngress) -> FastAPI:
    """The FastAPI app of one ingress replica, wrapped in the key, body and error middleware."""
    api = FastAPI(
        title="PoseGPT",
        version="1",
        description="Chat about human pose; answers carry SMPL poses, joints and meshes.",
        responses=ERRORS,
    )
    # Before any route is added: schema validation stays on the loop, bounded by the schema's caps.
    api.router.route_class = _ThreadJSONRoute

    @api.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> JSONResponse:
        rid = _rid(request)
        if exc.detail:
            # Internals (a decoder's words) stay in the log, under the id the client was given.
            logger.info("request %s refused (%s): %s", rid, exc.code, exc.detail)
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            rid,
            headers=exc.headers,
            limit=exc.limit,
            value=exc.value,
            maximum=exc.maximum,
        )

    @api.exception_handler(ModelFailure)
    async def model_failed(request: Request, exc: ModelFailure) -> JSONResponse:
        rid = _rid(request)
        return error_response(
            500, "internal", f"the model failed on this request; the replica log has request id {rid}", rid
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON", _rid(request))
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:10]
        )
        return error_response(422, "invalid_request", details[:2000], _rid(request))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            d = dict(exc.detail)
            return error_response(
                exc.status_code, d.pop("code"), d.pop("message"), _rid(request), headers=exc.headers, **d
            )
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            _rid(request),
            headers=exc.headers,
        )

    @api.post("/v1/chat", response_model=ChatResponse)
    async def chat(req: ChatRequest, request: Request) -> ChatResponse:
        """Answer the last user turn of a conversation (multi-turn: send the whole history)."""
        return await service.chat(req, _rid(request), _root(request))

    @api.post("/v1/poses", response_model=PosesResponse)
    async def poses(req: PosesRequest, request: Request) -> PosesResponse:
        """Answer independent pose queries; results come in query order."""
        return await service.poses(req, _rid(request), _root(request))

    @api.post(
        "/v1/chat/completions",
        response_model=openai_api.ChatCompletion,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def chat_completions(req: openai_api.ChatCompletionRequest, request: Request) -> Response:
        """OpenAI-compatible chat; poses in the extension field ``choices[0].poses``; ``stream: true`` for SSE."""
        rid = _rid(request)
        messages, image = openai_api.to_conversation(req)
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        decoding = service._decoding(
            DecodingOptions(max_new_tokens=limit, temperature=req.temperature, seed=req.seed)
        )
        answer = await service.converse(
            messages, image, decoding, False, False, rid, _root(request), time.perf_counter()
        )
        done = openai_api.completion(rid, answer)
        if not req.stream:
            return JSONResponse(done.model_dump(mode="json"))
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            openai_api.stream_events(done, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @api.get("/v1/models", response_model=openai_api.ModelList)
    async def models() -> openai_api.ModelList:
        """The one model this service answers with (OpenAI's model list)."""
        return openai_api.ModelList(data=[openai_api.ModelCard(id=openai_api.MODEL_ID, created=0)])

    @api.get("/v1/poses/{body_id}/mesh.obj", response_class=Response)
    async def mesh_obj(body_id: str) -> Response:
        """The posed body as Wavefront OBJ."""
        text = await service.mesh_obj(body_id)
        return Response(
            text,
            media_type="model/obj",
            headers={"Content-Disposition": f'attachment; filename="pose-{body_id}.obj"'},
        )

    @api.get("/v1/poses/{body_id}/mesh.png", response_class=Response)
    async def mesh_png(body_id: str) -> Response:
        """Front and side views of the posed body."""
        return Response(await service.mesh_png(body_id), media_type="image/png")

    @api.get("/v1/body", response_model=BodyTopology)
    async def body() -> Response:
        """Faces and body parts of the body model (the same for every returned mesh)."""
        return Response(await service.body_json(), media_type="application/json")

    @api.get("/healthz", response_model=Health)
    async def healthz(request: Request) -> JSONResponse:
        """200 once the model is loaded and answering; 503 while loading or saturated."""
        authorized = bool(request.scope.get("state", {}).get("authorized", False))
        status, health = await service.health(authorized)
        return JSONResponse(json.loads(health.model_dump_json()), status_code=status)

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(service.page(_root(request)), headers={"Content-Security-Policy": PAGE_CSP})

    def _next(value: str | None) -> str:
        # Only this service's own pages: never an open redirect.
        return value if value in PAGES else "/"

    @api.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        root, target = _root(request), _next(request.query_params.get("next"))
        if service.api_key is None:
            return RedirectResponse(f"{root}{target}", status_code=303)
        return HTMLResponse(service.login_page(root, target), headers={"Content-Security-Policy": LOGIN_CSP})

    @api.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request) -> Response:
        """The sign-in form's post (``key``, ``next``): a session cookie and a redirect, or the form again."""
        root = _root(request)
        try:
            form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:  # more fields than the form has
            form = {}
        target = _next((form.get("next") or ["/"])[0])
        given = (form.get("key") or [""])[0].strip()
        if service.api_key is None:
            return RedirectResponse(f"{root}{target}", status_code=303)
        if not key_matches(f"Bearer {given}", service.api_key):
            return HTMLResponse(
                service.login_page(root, target, "Wrong key."),
                status_code=401,
                headers={"Content-Security-Policy": LOGIN_CSP},
            )
        response = RedirectResponse(f"{root}{target}", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_token(service.api_key),
            max_age=SESSION_TTL_S,
            path=root or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Added innermost first: errors → key → body limits → routes. The key is checked before any
    # body is read, and both refusals close the connection.
    limits = service.cfg.limits
    api.add_middleware(
        BodyGuardMiddleware,
        max_bytes=limits.max_body_bytes,
        timeout_s=limits.body_timeout_s,
        max_in_flight=limits.max_slow_bodies,
    )
    if service.api_key is not None:
        api.add_middleware(BearerKeyMiddleware, key=service.api_key)
    api.add_middleware(_CatchAll, responses=service.responses)
    return api


__all__ = ["PoseIngress", "build_api", "public_source"]
