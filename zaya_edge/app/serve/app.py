"""The FastAPI app: routes, the API key, the lifespan of the scheduler thread.

    GET  /health                 200 while the scheduler thread runs, else 503
    GET  /metrics                Prometheus text (metrics.py)
    GET  /v1/models[/{id}]       the one model this server serves
    POST /v1/chat/completions    chat; stream; reasoning split; Markovian RSA (rsa.py)
    POST /v1/completions         raw prompts (text or token ids)

Handlers only parse, plan (prepare.py, in a worker thread: it tokenizes) and submit; the model runs
on the scheduler's thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import threading
import time

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse

from zaya_edge.runtime import Engine
from zaya_edge.runtime.scheduler import Scheduler

from . import api_errors, metrics, prepare, rsa, streaming
from .api_errors import APIError
from .models import ChatRequest, CompletionRequest
from .responses import Reply

RSA_SOLVES = 2  # Markovian RSA solves running at once (each is a population of rollouts)


@dataclasses.dataclass
class Served:
    """What every handler shares."""

    engine: Engine
    scheduler: Scheduler
    model: str
    api_key: str | None = None
    rsa_slots: threading.Semaphore = dataclasses.field(default_factory=lambda: threading.BoundedSemaphore(RSA_SOLVES))
    http: metrics.HTTPCounts = dataclasses.field(default_factory=metrics.HTTPCounts)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))


class Gate:
    """ASGI middleware: the API key on /v1 (401 before the body is read), and a count of every response."""

    def __init__(self, app, served: Served):
        self.app, self.served = app, served

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.served.http.add(path if path in _PATHS else "other", message["status"])
            await send(message)

        if path.startswith("/v1") and not self._authorized(scope):
            error = APIError(401, "invalid or missing API key (send Authorization: Bearer KEY)", code="invalid_api_key")
            return await error.response()(scope, receive, counting_send)
        await self.app(scope, receive, counting_send)

    def _authorized(self, scope) -> bool:
        key = self.served.api_key
        if not key:
            return True
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


_PATHS = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions")


def create_app(served: Served) -> FastAPI:
    """The app over a started scheduler; closing the app (its lifespan's end) closes the scheduler."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        served.scheduler.close()

    app = FastAPI(title="zaya-edge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    api_errors.install(app)
    _routes(app, served)
    app.add_middleware(Gate, served=served)
    return app


def _model_card(served: Served) -> dict:
    return {"id": served.model, "object": "model", "created": served.created, "owned_by": "zaya-edge",
            "max_model_len": served.engine.context_length}


def _routes(app: FastAPI, s: Served) -> None:
    @app.get("/health")
    async def health():
        ok = s.scheduler.metrics().running
        return JSONResponse({"status": "ok" if ok else "scheduler stopped"}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_text():
        return PlainTextResponse(metrics.render(s.scheduler.metrics(), s.http), media_type=metrics.CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(s)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != s.model:
            raise APIError(404, f"the model {model_id!r} does not exist", type="not_found_error", code="model_not_found")
        return _model_card(s)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        prepare.check_model(body, s.model)
        wanted = rsa.strategy(body)
        if wanted is not None:
            return await rsa.respond(s, body, *wanted, request)
        plan = await run_in_threadpool(prepare.chat_plan, s.engine, body)  # tokenizing: off the event loop
        reply = Reply(True, s.model, plan, s.engine.codec, split_reasoning=not body.reasoning_inline)
        return await streaming.respond(s.scheduler, plan, reply, body.stream, body.include_usage, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        prepare.check_model(body, s.model)
        plan = await run_in_threadpool(prepare.completion_plan, s.engine, body)
        reply = Reply(False, s.model, plan, s.engine.codec)
        return await streaming.respond(s.scheduler, plan, reply, body.stream, body.include_usage, request)
