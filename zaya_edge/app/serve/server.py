"""`serve()`: load the artifact once, start the scheduler thread, run uvicorn until Ctrl-C / SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from zaya_edge.runtime import Engine
from zaya_edge.runtime.prefix_cache import DEFAULT_BYTES
from zaya_edge.runtime.scheduler import Scheduler

from .app import Served, create_app

GRACEFUL_S = 5  # open streams get this long at shutdown before they are cut


def build(artifact: str | Path, *, max_batch: int = 16, max_queue: int = 64, api_key: str | None = None,
          model_name: str | None = None, threads: int | None = None, prefix_cache: int = DEFAULT_BYTES):
    """(the app, its Served state) with the scheduler running; the app's lifespan end closes it."""
    engine = Engine.load(artifact, threads=threads, max_batch=max_batch, prefix_cache=prefix_cache)
    engine.codec  # an artifact without a tokenizer cannot serve text: refuse it now, in one line
    scheduler = Scheduler(engine, max_batch=max_batch, max_queue=max_queue).start()
    served = Served(engine, scheduler, model_name or Path(artifact).resolve().name, api_key or None)
    return create_app(served), served


def serve(artifact: str | Path, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning", **options) -> None:
    app, served = build(artifact, **options)
    print(f"zaya-edge: serving {served.model!r} on http://{host}:{port}/v1 (batch of {served.scheduler.batch.slots}, "
          f"queue {served.scheduler.max_queue}{', API key required' if served.api_key else ''})", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_S)
    try:
        uvicorn.Server(config).run()
    finally:
        served.scheduler.close()
