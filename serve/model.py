"""The model deployment: one PoseGPT per replica, answering queries in ``@serve.batch`` batches.

Each query (a conversation and an optional image) is checked on its own first —
a bad conversation or image is answered with an ``invalid_input`` error, and a
query whose check fails in any other way with an ``internal`` error; neither
reaches the batch. The rest are decoded together, one left-padded batch per set
of decoding settings. If a batch fails, its queries are retried one by one so
that a single bad query cannot fail its neighbours; a query that still fails is
logged once, with its request id and traceback, and answered with an
``internal`` error. The replica keeps serving.

Metrics (``ray.serve.metrics``, exported by Ray's metrics agent in Prometheus form):
``posegpt_batch_size`` and ``posegpt_queue_seconds`` histograms, ``posegpt_poses_total``
and ``posegpt_model_errors_total`` (by ``code``). ``check_health`` decodes one token
of a fixed prompt through the same batch queue, so a replica whose model no longer
answers is restarted by Serve.

Batch size and wait come from the deployment's ``user_config`` and change live
through ``reconfigure`` (no restart, no model reload).

``@serve.batch`` forms a batch as soon as its wait ends, even while the previous
batch is still decoding, so under load it would queue many small batches behind
the running one (measured: batches of 2 on average at 32 concurrent requests).
The batches it forms therefore go to ``Coalescer``, which decodes one batch at a
time and merges everything that arrived meanwhile, up to ``max_batch_size``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ray import serve

from posegpt.config import from_dict
from serve.settings import BatchingConfig, ServeConfig

logger = logging.getLogger("ray.serve")


@dataclass
class _Item:
    request_id: str
    messages: list[dict[str, str]]
    image: Any
    settings: tuple[int, float, int | None]
    poses: list[list[float]] | None = None
    """One checked pose per ``<POSE_IN>`` of the conversation, in order (the ingress resolved ids)."""
    """(max_new_tokens, temperature, seed): queries decode together only with equal settings."""
    enqueued: float = field(default_factory=time.perf_counter)


def _error(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


MAX_FORMED_BATCHES = 1024
"""``max_concurrent_batches`` of ``@serve.batch``: every formed batch goes straight to the coalescer."""


class Coalescer:
    """Runs ``decode`` on one batch at a time; batches submitted meanwhile are merged for the next run.

    A merged batch holds at most ``max_items()`` items, taking submissions whole and in
    arrival order. ``decode`` runs in a worker thread, so the event loop keeps taking
    requests while it runs.
    """

    def __init__(self, decode: Callable[[list[Any]], list[Any]], max_items: Callable[[], int]) -> None:
        self._decode = decode
        self._max_items = max_items
        self._pending: deque[tuple[list[Any], asyncio.Future]] = deque()
        self._worker: asyncio.Task | None = None

    async def submit(self, items: list[Any]) -> list[Any]:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            group = [self._pending.popleft()]
            size = len(group[0][0])
            while self._pending and size + len(self._pending[0][0]) <= self._max_items():
                group.append(self._pending.popleft())
                size += len(group[-1][0])
            merged = [item for items, _ in group for item in items]
            try:
                results = await asyncio.to_thread(self._decode, merged)
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for items, future in group:
                if not future.done():  # a caller that went away (cancelled) gets nothing
                    future.set_result(results[start : start + len(items)])
                start += len(items)


HEALTH_REQUEST_ID = "health-check"
"""Request id of ``check_health``'s probe (left out of the metrics)."""


class ModelMetrics:
    """The model replica's Serve metrics (tags ``deployment``, ``replica``, ``application`` are added by Serve)."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self.batch_size = Histogram(
            "posegpt_batch_size",
            description="Queries decoded together, per decoding round.",
            boundaries=[1, 2, 4, 8, 16, 32, 64],
        )
        self.queue_seconds = Histogram(
            "posegpt_queue_seconds",
            description="Time a query waited on the replica before its batch started.",
            boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        )
        self.poses = Counter("posegpt_poses_total", description="Poses answered (one per <POSE> token).")
        self.errors = Counter(
            "posegpt_model_errors_total",
            description="Queries the model refused or failed on.",
            tag_keys=("code",),
        )

    def record(self, items: Sequence[_Item], results: Sequence[dict[str, Any]], started: float) -> None:
        counted = [
            (item, r) for item, r in zip(items, results, strict=True) if item.request_id != HEALTH_REQUEST_ID
        ]
        if not counted:
            return
        self.batch_size.observe(len(counted))
        for item, result in counted:
            self.queue_seconds.observe(max(0.0, started - item.enqueued))
            if "error" in result:
                self.errors.inc(tags={"code": result["error"]["code"]})
            elif result["poses"] is not None and len(result["poses"]):
                self.poses.inc(len(result["poses"]))


@serve.deployment(name="PoseModel")
class PoseModel:
    """Loads the checkpoint (the replica is ready only after that) and answers ``answer(query)`` calls."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from posegpt.runtime import setup_environment

        cfg = from_dict(ServeConfig, settings)
        setup_environment(cfg.cache_dir)
        import torch

        from posegpt.body.model import BodyModel
        from posegpt.inference import PoseGPT

        torch.set_num_threads(cfg.torch_threads)
        body = BodyModel(cfg.body_model_path, cache_dir=cfg.cache_dir) if cfg.body_model_path else None
        self.cfg = cfg
        self.model = PoseGPT.from_checkpoint(
            cfg.checkpoint,
            device=cfg.device,
            dtype=cfg.dtype,
            cache_dir=cfg.cache_dir,
            storage=cfg.storage,
            tracking_uri=cfg.tracking_uri,
            body=body,
        )
        # Build the body now (generated on first use) so the first answer with a pose is not slow.
        self.body = self.model.body
        self.replica = serve.get_replica_context().replica_id.unique_id
        # Counted in the decoding thread, read by info() on the event loop.
        self.batch_sizes: Counter[int] = Counter()
        self._stats_lock = threading.Lock()
        self.coalescer = Coalescer(self._run, lambda: self._generate._get_max_batch_size())
        self._apply_batching(cfg.batching)
        self.metrics = ModelMetrics()

    async def check_health(self) -> None:
        """Serve's periodic health check: one greedy token of a fixed prompt, through the batch queue."""
        item = _Item(HEALTH_REQUEST_ID, [{"role": "user", "content": "Hello"}], None, (1, 0.0, 0))
        result = await self._generate(item)
        if "error" in result:
            raise RuntimeError(
                f"PoseModel {self.replica}: the health-check generation failed: {result['error']}"
            )

    # -- configuration ------------------------------------------------------------------------

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this with the deployment's ``user_config``: ``max_batch_size``, ``batch_wait_timeout_s``."""
        batching = from_dict(BatchingConfig, dict(user_config or {}))
        batching.validate()
        self._apply_batching(batching)
        logger.info("PoseModel %s: batching now %s", self.replica, asdict(batching))

    def _apply_batching(self, batching: BatchingConfig) -> None:
        self._generate.set_max_batch_size(batching.max_batch_size)
        self._generate.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    # -- calls from the ingress ---------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "checkpoint": self.cfg.checkpoint,
            "device": str(self.model.model.device),
            # Read back from the batch queue: what is in force, not what was asked for.
            "batching": {
                "max_batch_size": self._generate._get_max_batch_size(),
                "batch_wait_timeout_s": self._generate._get_batch_wait_timeout_s(),
            },
            "batch_sizes": self._batch_size_counts(),
        }

    def _batch_size_counts(self) -> dict[str, int]:
        with self._stats_lock:
            return {str(k): v for k, v in sorted(self.batch_sizes.items())}

    async def body_topology(self) -> dict[str, Any]:
        """Faces, per-vertex body parts and part colours: the same for every mesh of this body model."""
        from posegpt.body.model import vertex_part_labels
        from posegpt.render import PART_COLORS, part_face_colors

        faces = np.asarray(self.body.faces, np.int32)
        weights = self.body.skinning_weights.detach().cpu().numpy()
        return {
            "faces": faces,
            "parts": vertex_part_labels(self.body).astype(np.int32),
            "part_colors": np.asarray(PART_COLORS, np.float32),
            "face_colors": part_face_colors(faces, weights).astype(np.float32),
        }

    async def answer(self, query: dict[str, Any]) -> dict[str, Any]:
        """One query: ``messages``, ``image`` (encoded bytes or None), ``poses`` (72 floats per
        ``<POSE_IN>``, or None), ``max_new_tokens``, ``temperature``, ``seed``, ``request_id``.
        Returns the answer with arrays, or ``{"error": ...}``."""
        item = _Item(
            request_id=str(query.get("request_id", "")),
            messages=list(query["messages"]),
            image=query.get("image"),
            settings=(int(query["max_new_tokens"]), float(query["temperature"]), query.get("seed")),
            poses=query.get("poses"),
        )
        return await self._generate(item)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02, max_concurrent_batches=MAX_FORMED_BATCHES)
    async def _generate(self, items: list[_Item]) -> list[dict[str, Any]]:
        return await self.coalescer.submit(items)

    # -- work, in the decoding thread ---------------------------------------------------------

    def _run(self, items: Sequence[_Item]) -> list[dict[str, Any]]:
        from posegpt.inference import Query

        started = time.perf_counter()
        results: list[dict[str, Any] | None] = [None] * len(items)
        groups: dict[tuple, list[tuple[int, Query]]] = {}
        for i, item in enumerate(items):
            query = Query(item.messages, item.image, item.poses)
            try:
                # Same checks and tokenisation the batch makes: a bad query fails here, alone.
                _, image = self.model.encode_query(query, "request")
            except ValueError as exc:
                results[i] = _error("invalid_input", str(exc), item.request_id)
                continue
            except Exception:
                # Not a refusal the model meant (a tokenizer's TypeError, ...): this query only.
                logger.exception("PoseModel %s: request %s failed its checks", self.replica, item.request_id)
                results[i] = _error("internal", "the model failed on this request", item.request_id)
                continue
            groups.setdefault(item.settings, []).append((i, Query(item.messages, image, item.poses)))
        for settings, members in groups.items():
            for i, out in self._decode_group(settings, members, items):
                queue_ms = (started - items[i].enqueued) * 1000.0
                if "timings" in out:
                    out["timings"]["queue_ms"] = queue_ms
                results[i] = out
        out = [
            r if r is not None else _error("internal", "no result", items[i].request_id)
            for i, r in enumerate(results)
        ]
        try:
            self.metrics.record(items, out, started)
        except Exception:  # metrics never cost an answer
            logger.exception("PoseModel %s: recording metrics failed", self.replica)
        return out

    def _decode_group(
        self, settings: tuple[int, float, int | None], members: list[tuple[int, Any]], items: Sequence[_Item]
    ) -> list[tuple[int, dict[str, Any]]]:
        try:
            probes = sum(items[i].request_id == HEALTH_REQUEST_ID for i, _ in members)
            return self._decode(settings, members, len(members) - probes)
        except Exception:
            if len(members) == 1:
                i = members[0][0]
                logger.exception("PoseModel %s: request %s failed", self.replica, items[i].request_id)
                return [(i, _error("internal", "the model failed on this request", items[i].request_id))]
        # Retry one by one: only the queries that fail alone get an error.
        out: list[tuple[int, dict[str, Any]]] = []
        for member in members:
            out.extend(self._decode_group(settings, [member], items))
        return out

    def _decode(
        self, settings: tuple[int, float, int | None], members: list[tuple[int, Any]], counted: int
    ) -> list[tuple[int, dict[str, Any]]]:
        from posegpt.inference import GenerationSettings

        max_new_tokens, temperature, seed = settings
        gen = GenerationSettings(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, return_vertices=True
        )
        start = time.perf_counter()
        answers = self.model.batch([q for _, q in members], gen)
        generate_ms = (time.perf_counter() - start) * 1000.0
        with self._stats_lock:
            if counted:  # health-check probes stay out of the batch statistics
                self.batch_sizes[counted] += 1
        out = []
        for (i, _), answer in zip(members, answers, strict=True):
            out.append(
                (
                    i,
                    {
                        "text": answer.text,
                        "finish_reason": answer.finish_reason,
                        "poses": answer.poses,
                        "joints": answer.joints,
                        "vertices": answer.vertices,
                        "prompt_tokens": answer.prompt_tokens,
                        "completion_tokens": answer.completion_tokens,
                        "timings": {
                            "generate_ms": generate_ms,
                            "batch_size": len(members),
                            "replica": self.replica,
                        },
                    },
                )
            )
        return out


__all__ = ["PoseModel"]
