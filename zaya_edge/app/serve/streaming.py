"""The bridge from the scheduler thread to the event loop, and the two ways a reply leaves.

    scheduler thread ── sink ─ loop.call_soon_threadsafe ─► asyncio.Queue ─► collect() ─► JSON body
                                                                          └► sse()     ─► data: {chunk} … data: [DONE]

The model never runs on the event loop. A client that goes away cancels its job: a stream is
cancelled by Starlette when the connection drops (its `finally` cancels the job), a plain request
polls for the disconnect while it waits. The scheduler drops the sequences at its next step.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from zaya_edge.runtime.scheduler import Job, Scheduler

from .api_errors import from_exception
from .prepare import Plan
from .responses import Reply

DISCONNECT_POLL_S = 0.25
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Channel:
    """Items put from any thread, awaited on the event loop that made the channel."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)  # raises once the loop is closed

    async def get(self, timeout: float | None = None):
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def get_all(self) -> list:
        """The next item and every one already behind it (a slow reader catches up in one write)."""
        items = [await self.queue.get()]
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


class ClientGone(Exception):
    """The client disconnected while its request ran."""


def sse(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


async def wait_or_disconnect(source, request: Request):
    """The next item of a Channel, or the result of a future; ClientGone if the client left first
    (checked every DISCONNECT_POLL_S)."""
    if isinstance(source, Channel):
        get = source.get
    else:  # a future (an RSA solve in a worker thread): shielded, so a timeout does not cancel it
        def get(timeout):
            return asyncio.wait_for(asyncio.shield(source), timeout)
    while True:
        try:
            return await get(DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                raise ClientGone() from None


async def respond(scheduler: Scheduler, plan: Plan, reply: Reply, stream: bool, include_usage: bool,
                  request: Request):
    """Submit the plan's requests (QueueFull → 429 before anything is sent) and answer."""
    channel = Channel()
    job = scheduler.submit(plan.requests, channel.put, top_logprobs=plan.top_logprobs)
    if stream:
        return StreamingResponse(_stream(reply, channel, job, include_usage), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    try:
        while not reply.done:
            item = await wait_or_disconnect(channel, request)
            if isinstance(item, BaseException):
                raise item
            reply.add(item)
    except ClientGone:
        return JSONResponse({}, status_code=499)  # nobody reads it
    finally:
        job.cancel()  # a no-op once every sequence finished
    return JSONResponse(reply.body())


async def _stream(reply: Reply, channel: Channel, job: Job, include_usage: bool) -> AsyncIterator[str]:
    try:
        if reply.chat:
            yield "".join(sse(reply.chunk([e], include_usage)) for e in reply.role_entries())
        while not reply.done:
            items = await channel.get_all()
            failed = next((i for i in items if isinstance(i, BaseException)), None)
            text = "".join(sse(reply.chunk([e], include_usage)) for i in items if i is not failed for e in reply.add(i))
            if text:
                yield text
            if failed is not None:
                yield sse(from_exception(failed).body())
                break
        if include_usage and reply.done:
            yield sse(reply.chunk([], usage=reply.usage()))
        yield DONE
    finally:
        job.cancel()
