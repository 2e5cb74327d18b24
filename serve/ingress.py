"""The HTTP ingress: FastAPI routes, request checks, the mesh cache and the web page.

Routes (relative to the application's route prefix):

* ``POST /v1/chat``: a conversation (and an optional inline image) → the answer and its poses.
* ``POST /v1/poses``: independent queries → one answer each, in order; every query is
  a separate call to the model deployment, so they spread over replicas and batches.
* ``GET /v1/poses/{id}/mesh.obj`` / ``mesh.png``: the body of a recent answer.
* ``GET /v1/body``: faces and body parts shared by every mesh (for the page's viewer).
* ``GET /healthz``: 200 once a model replica answers, 503 before (open without the key).

With ``detect: true`` (chat or a pose query) and an image, the ingress finds the people
with the configured person detector (``posegpt.detect``, in a worker thread), crops each
like the prepare job does, asks the model once per crop, and answers with one entry
per person (box, text, poses).
* ``GET /``: the web page; ``/static/*`` its script and style; ``/docs`` the OpenAPI page.

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

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posegpt.config import from_dict
from serve.auth import BearerKeyMiddleware, load_api_key
from serve.errors import error_response, request_id_from_scope
from serve.limits import (
    BodySizeLimitMiddleware,
    RequestRejected,
    check_at_most,
    check_texts,
    decode_inline_image,
)
from serve.mesh_cache import CachedBody, MeshCache
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


class ModelFailure(Exception):
    """The model failed on a request (already logged with its traceback where it happened)."""


def _severity(exc: BaseException) -> int:
    if isinstance(exc, ModelFailure):
        return 3
    if isinstance(exc, RequestRejected) and exc.code == "overloaded":
        return 2
    return 1


class _CatchAll:
    """Answers an unexpected exception with a JSON 500 carrying the request id, logged once here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
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

    def __init__(self, model: DeploymentHandle, settings: dict[str, Any]) -> None:
        from posegpt.runtime import setup_environment

        cfg = from_dict(ServeConfig, settings)
        setup_environment(cfg.cache_dir)
        self.cfg = cfg
        self.model = model
        # The entry point reads the environment (library code never does): the key's source is configured.
        self.api_key = load_api_key(cfg, os.environ)
        self.cache = MeshCache(cfg.mesh_cache_size)
        self._topology: dict[str, Any] | None = None
        self._topology_json: bytes | None = None
        self._topology_lock = asyncio.Lock()
        self._model_seen = False
        self._page = (STATIC_DIR / "index.html").read_text()
        self.detector, self._detector_error = load_detector(cfg)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)

    # -- model calls --------------------------------------------------------------------------

    async def ask(self, query: dict[str, Any], where: str) -> dict[str, Any]:
        """One query to the model deployment; failures become ``RequestRejected`` or ``ModelFailure``."""
        try:
            result = await self.model.answer.remote(query)
        except BackPressureError as exc:
            retry = exc.retry_after_s
            raise RequestRejected(
                exc.status_code,
                "overloaded",
                "the model is at capacity; retry shortly",
                headers={"Retry-After": str(int(np.ceil(retry)))} if retry else {"Retry-After": "1"},
            ) from exc
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
        return {"max_new_tokens": max_new, "temperature": temperature, "seed": req.seed}

    def _image(self, data: str | None, where: str) -> bytes | None:
        return None if data is None else decode_inline_image(data, self.cfg.limits, where)

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
        limits = self.cfg.limits
        check_at_most("max_messages", len(req.messages), limits, "the number of messages")
        check_texts([m.content for m in req.messages], limits, "messages")
        query = {
            "messages": [m.model_dump() for m in req.messages],
            "image": self._image(req.image, "image"),
            "request_id": request_id,
            **self._decoding(req),
        }
        answer = await self.respond(query, req.detect, "messages", req.include_vertices, root, started)
        return ChatResponse(request_id=request_id, **answer)

    async def poses(self, req: PosesRequest, request_id: str, root: str) -> PosesResponse:
        started = time.perf_counter()
        limits = self.cfg.limits
        check_at_most("max_batch_queries", len(req.queries), limits, "the number of queries")
        check_texts([q.text for q in req.queries], limits, "queries.text")
        decoding = self._decoding(req)
        queries = [
            {
                "messages": [{"role": "user", "content": q.text}],
                "image": self._image(q.image, f"queries[{i}].image"),
                "request_id": f"{request_id}/{i}",
                **decoding,
            }
            for i, q in enumerate(req.queries)
        ]
        outcomes = await asyncio.gather(
            *(
                self.respond(q, req.queries[i].detect, f"queries[{i}]", req.include_vertices, root, started)
                for i, q in enumerate(queries)
            ),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise max(failures, key=_severity)
        results = [Answer(**o) for o in outcomes]
        return PosesResponse(
            request_id=request_id, results=results, total_ms=(time.perf_counter() - started) * 1000.0
        )

    async def respond(
        self,
        query: dict[str, Any],
        detect: bool,
        where: str,
        include_vertices: bool,
        root: str,
        started: float,
    ) -> dict[str, Any]:
        """The answer fields of one query: as sent, or (``detect``) one model answer per person in its image."""
        if not detect:
            return self._answer(await self.ask(query, where), include_vertices, root, started)
        if query["image"] is None:
            raise RequestRejected(422, "invalid_request", f"{where}: detect needs an image")
        t0 = time.perf_counter()
        people = await self.detect_people(query["image"], f"{where}: image")
        detect_ms = (time.perf_counter() - t0) * 1000.0
        outcomes = await asyncio.gather(
            *(
                self.ask({**query, "image": crop, "request_id": f"{query['request_id']}/person{k}"}, where)
                for k, (_, crop) in enumerate(people)
            ),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise max(failures, key=_severity)
        answers = [self._answer(o, include_vertices, root, started) for o in outcomes]
        return merge_people([box for box, _ in people], answers, detect_ms, started)

    async def detect_people(self, image: bytes, where: str) -> list[tuple[Any, bytes]]:
        """(box, encoded crop) of every person the detector finds in ``image``, best score first."""
        if self.detector is None:
            status = 503 if self.cfg.detector.weights else 422
            raise RequestRejected(status, "detector_unavailable", f"{where}: {self._detector_error}")
        return await asyncio.to_thread(self._person_crops, image, where)

    def _person_crops(self, image: bytes, where: str) -> list[tuple[Any, bytes]]:
        from posegpt.crops import ImageError, ImageLimits, decode_image, encode_jpeg
        from posegpt.detect import detect_and_crop

        limits = ImageLimits(
            max_bytes=self.cfg.limits.max_image_bytes, max_pixels=self.cfg.limits.max_image_pixels
        )
        try:
            pixels = decode_image(image, limits, where)
        except ImageError as exc:
            raise RequestRejected(422, "invalid_image", str(exc)) from exc
        crops = detect_and_crop(pixels, self.detector, self.cfg.detect_crop_size)
        return [(c.box, encode_jpeg(c.image, 95)) for c in crops]

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

    async def health(self) -> tuple[int, Health]:
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


def load_detector(cfg: ServeConfig) -> tuple[Any, str]:
    """The person detector of ``cfg``, or None and why (detection off, or weights that do not load)."""
    if not cfg.detector.weights:
        return None, "this service has no person detector (detector.weights is not set)"
    try:
        from posegpt.detect import PersonDetector

        return PersonDetector(cfg.detector), ""
    except Exception as exc:  # a bad weights file fails detect requests only, not the whole service
        logger.exception("the person detector did not load")
        return None, f"the person detector did not load ({exc})"


def merge_people(
    boxes: list[Any], answers: list[dict[str, Any]], detect_ms: float, started: float
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
                box=[round(float(v), 2) for v in box.xyxy],
                score=round(float(box.score), 4),
                text=a["text"],
                poses=a["poses"],
            )
            for box, a in zip(boxes, answers, strict=True)
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


def build_api(service: PoseIngress) -> FastAPI:
    """The FastAPI app of one ingress replica, wrapped in the key, size and error middleware."""
    api = FastAPI(
        title="PoseGPT",
        version="1",
        description="Chat about human pose; answers carry SMPL poses, joints and meshes.",
        responses=ERRORS,
    )

    @api.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> JSONResponse:
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            _rid(request),
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
        return error_response(422, "invalid_request", details, _rid(request))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            d = exc.detail
            return error_response(exc.status_code, d.pop("code"), d.pop("message"), _rid(request), **d)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), _rid(request)
        )

    @api.post("/v1/chat", response_model=ChatResponse)
    async def chat(req: ChatRequest, request: Request) -> ChatResponse:
        """Answer the last user turn of a conversation (multi-turn: send the whole history)."""
        return await service.chat(req, _rid(request), _root(request))

    @api.post("/v1/poses", response_model=PosesResponse)
    async def poses(req: PosesRequest, request: Request) -> PosesResponse:
        """Answer independent pose queries; results come in query order."""
        return await service.poses(req, _rid(request), _root(request))

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
    async def healthz() -> JSONResponse:
        """200 once the model is loaded and answering; 503 while loading or saturated."""
        status, health = await service.health()
        return JSONResponse(json.loads(health.model_dump_json()), status_code=status)

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(service.page(_root(request)), headers={"Content-Security-Policy": PAGE_CSP})

    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Added innermost first: errors → key → body size → routes.
    api.add_middleware(BodySizeLimitMiddleware, max_bytes=service.cfg.limits.max_body_bytes)
    if service.api_key is not None:
        api.add_middleware(BearerKeyMiddleware, key=service.api_key)
    api.add_middleware(_CatchAll)
    return api


__all__ = ["PoseIngress", "build_api"]
