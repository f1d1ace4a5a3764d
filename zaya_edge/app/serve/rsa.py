"""Markovian RSA per request: Zyphra's proxy fields mapped onto MarkovianRSA, solved through the batch.

Zyphra's proxy (markovian-rsa.md) runs stages 0..rsa_t; every stage but the last has rsa_n prompts
at short_resp_len tokens, the last has rsa_final_n prompts (1, or 0 = rsa_n) at max_tokens:

    rsa_final_n 0 (or rsa_n)  ->  MarkovianRSA(rounds=rsa_t, select="vote", final_budget=max_tokens)
    rsa_final_n 1, rsa_t >= 1 ->  MarkovianRSA(rounds=rsa_t - 1, select="aggregate")  (its final
                                  sample runs at temperature 0.6 / top-p 0.95 / top-k 40, as Zyphra's)
    rsa_final_n 1, rsa_t 0    ->  a plain request, as the proxy passes it through

rsa_n -> population, rsa_k -> subset, short_resp_len -> budget, tail_window_len -> tail (in tokens;
rsa_tail_unit "words" counts as the proxy does), rsa_tail_window false -> tail = budget (whole
chains). What MarkovianRSA cannot express is refused with a 400: a final-sample budget other than
short_resp_len, a final_temperature other than the one the final stage samples at, rsa_final_n
other than 0, 1 or rsa_n. The solve runs in a worker thread; its rollouts are ordinary jobs of the
scheduler (Scheduler.generate_batch), so they share the model with every other request.
"""

from __future__ import annotations

import asyncio
import threading
import time

from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, StreamingResponse

from zaya_edge.runtime import Request
from zaya_edge.runtime.rsa import PRESETS, MarkovianRSA, RoundProgress, SolveInterrupted, SolveResult
from zaya_edge.runtime.rsa.runner import SELECT_SAMPLING
from zaya_edge.runtime.scheduler import Delta

from .api_errors import APIError, bad_request, from_exception
from .models import ChatRequest
from .prepare import DEFAULT_TEMPERATURE, Plan
from .responses import Reply, usage
from .streaming import DONE, SSE_HEADERS, Channel, ClientGone, sse, wait_or_disconnect

# The proxy's defaults (its README); rsa_t has none here: an RSA request says how many rounds.
ZYPHRA_DEFAULTS = dict(rsa_n=16, rsa_k=4, short_resp_len=8192, tail_window_len=4096, rsa_tail_window=True, rsa_final_n=1)
PROGRESS_EVERY_S = 0.25
_PLAIN_ONLY = ("stop", "logprobs", "top_k", "min_p", "repetition_penalty", "ignore_eos")


def strategy(body: ChatRequest) -> tuple[MarkovianRSA, dict] | None:
    """The MarkovianRSA a request asks for and the fields it was read from; None: a plain request."""
    given = body.rsa_given()
    if not given:
        return None
    preset = given.pop("rsa_preset", None)
    if preset is None and "rsa_t" not in given:
        raise bad_request("an RSA request needs rsa_t (aggregation rounds) or rsa_preset", param="rsa_t")
    fields = {**(_preset_fields(preset) if preset else ZYPHRA_DEFAULTS), **given}
    if fields["rsa_t"] == 0 and fields["rsa_final_n"] == 1:
        return None
    if body.n != 1:
        raise bad_request("an RSA request answers with one choice: n must be 1", param="n")
    for name in _PLAIN_ONLY:
        if getattr(body, name) not in (None, False):
            raise bad_request(f"{name} does not apply to an RSA request", param=name)
    return _settings(body, fields, given), {"rsa_preset": preset, **fields}


def _preset_fields(name: str) -> dict:
    if name not in PRESETS:
        raise bad_request(f"unknown rsa_preset {name!r} (choose from {', '.join(PRESETS)})", param="rsa_preset")
    p = PRESETS[name]
    return dict(rsa_n=p["population"], rsa_k=p["subset"], rsa_t=p["rounds"], short_resp_len=p["budget"],
                tail_window_len=p["tail"], rsa_tail_window=True, rsa_final_n=0, max_tokens=p["final_budget"])


def _settings(body: ChatRequest, f: dict, given: dict) -> MarkovianRSA:
    n, rounds, final_n, beta = f["rsa_n"], f["rsa_t"], f["rsa_final_n"], f["short_resp_len"]
    tail = f["tail_window_len"] if "tail_window_len" in given else min(f["tail_window_len"], beta)
    temperature = DEFAULT_TEMPERATURE if body.temperature is None else body.temperature
    common = dict(population=n, subset=f["rsa_k"], budget=beta, tail=tail if f["rsa_tail_window"] else beta,
                  temperature=temperature, top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed,
                  tail_unit=f.get("rsa_tail_unit") or "tokens")
    final_temperature = given.get("final_temperature")
    if final_n in (0, n):
        if final_temperature not in (None, temperature):
            raise bad_request("with rsa_final_n 0 the last round samples like the others: final_temperature must "
                              "equal temperature", param="final_temperature")
        return MarkovianRSA(**common, rounds=rounds, final_budget=body.budget or f.get("max_tokens") or beta)
    if final_n != 1:
        raise bad_request(f"rsa_final_n must be 0 (every candidate, voted), 1 (one final aggregation sample) "
                          f"or rsa_n, got {final_n}", param="rsa_final_n")
    if body.budget not in (None, beta):
        raise bad_request("with rsa_final_n 1 the final sample's budget is short_resp_len: MarkovianRSA gives the "
                          "last round and the final sample one budget; leave max_tokens out", param="max_tokens")
    if final_temperature not in (None, SELECT_SAMPLING["temperature"]):
        raise bad_request(f"the final aggregation sample runs at temperature {SELECT_SAMPLING['temperature']}",
                          param="final_temperature")
    return MarkovianRSA(**common, rounds=rounds - 1, final_budget=beta, select="aggregate")


def _problem(body: ChatRequest) -> str:
    if len(body.messages) != 1 or body.messages[0].role != "user" or not body.messages[0].text().strip():
        raise bad_request("an RSA request is one user message: the problem", param="messages")
    return body.messages[0].text()


def metadata(result: SolveResult, fields: dict) -> dict:
    """What the solve did: per stage its budget, candidates, answers and tokens; the vote; the settings."""
    stages = [{"round": r.round, "kind": r.kind, "budget": r.budget, "waves": r.waves, "candidates": len(r.candidates),
               "finished": sum(c.finished for c in r.candidates), "answers": [c.answer for c in r.candidates],
               "prompt_tokens": sum(c.prompt_tokens for c in r.candidates), "generated_tokens": r.generated_tokens,
               "wall_s": round(r.wall_s, 3)} for r in result.stages]
    return {"answer": result.answer, "selected_by": result.selected_by, "votes": result.votes,
            "winner": {"round": result.winner[0], "index": result.winner[1]}, "rounds": stages,
            "prompt_tokens": sum(s["prompt_tokens"] for s in stages), "generated_tokens": result.generated_tokens,
            "wall_s": round(result.wall_s, 3), "settings": result.params, "request": fields}


class _Progress:
    """RSA's on_progress, in the worker thread: stop when asked, forward a few events a second."""

    def __init__(self, channel: Channel | None):
        self.channel, self.stop, self.last = channel, threading.Event(), 0.0

    def __call__(self, p: RoundProgress):
        if self.stop.is_set():
            return False
        now = time.monotonic()
        if self.channel is not None and (p.done or now - self.last >= PROGRESS_EVERY_S):
            self.last = now
            self.channel.put(p)


async def respond(served, body: ChatRequest, settings: MarkovianRSA, fields: dict, request: HTTPRequest):
    problem = _problem(body)
    if not served.rsa_slots.acquire(blocking=False):
        raise APIError(429, "the server is busy: too many RSA solves run at once", type="rate_limit_error",
                       code="rate_limit_exceeded")
    progress = _Progress(Channel() if body.stream else None)

    def work() -> SolveResult | None:
        try:
            return settings.solve(served.scheduler, problem, on_progress=progress)
        except SolveInterrupted:  # a KeyboardInterrupt: it must not reach the event loop
            return None
        finally:
            served.rsa_slots.release()

    future = asyncio.get_running_loop().run_in_executor(None, work)
    reply = Reply(True, served.model, Plan([Request(())], 0, 1, None),
                  served.engine.codec, split_reasoning=not body.reasoning_inline)
    if body.stream:
        first = await _next(progress.channel, future)  # a solve refused up front is still a plain 400
        if first is None and future.exception() is not None:
            raise future.exception()
        return StreamingResponse(_stream(reply, first, progress, future, fields, body.include_usage),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    try:
        result = await wait_or_disconnect(future, request)
    except ClientGone:
        return JSONResponse({}, status_code=499)
    finally:
        progress.stop.set()
    return JSONResponse(_final(reply, result, fields)[0])


def _final(reply: Reply, result: SolveResult, fields: dict) -> tuple[dict, list[dict], dict, dict]:
    """(body, streamed entries, usage, metadata) of a finished solve: the winner's trace is the answer."""
    stage = next(r for r in result.stages if r.round == result.winner[0])
    winner = stage.candidates[result.winner[1]]
    meta = metadata(result, fields)
    entries = reply.add([Delta(0, -1, result.trace, winner.finish_reason)])
    used = usage(meta["prompt_tokens"], meta["generated_tokens"])
    return reply.body(usage=used, rsa_metadata=meta), entries, used, meta


async def _next(channel: Channel, future):
    """The next progress event, or None once the solve is over."""
    get = asyncio.ensure_future(channel.queue.get())
    done, _ = await asyncio.wait({get, future}, return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        return get.result()
    get.cancel()
    return None


async def _stream(reply: Reply, item, progress: _Progress, future, fields: dict, include_usage: bool):
    try:
        while item is not None:
            info = {k: getattr(item, k) for k in ("stage", "rounds", "kind", "total", "live", "finished",
                                                    "generated_tokens", "elapsed_s", "eta_s", "done")}
            yield sse(reply.chunk([], rsa_progress={**info, "tokens_per_s": round(item.tokens_per_s, 2)}))
            item = await _next(progress.channel, future)
        try:
            result = future.result()
        except Exception as exc:
            yield sse(from_exception(exc).body())
            yield DONE
            return
        _, entries, used, meta = _final(reply, result, fields)
        yield "".join(sse(reply.chunk([e], include_usage)) for e in reply.role_entries())
        yield "".join(sse(reply.chunk([e], include_usage, rsa_metadata=meta)) for e in entries)
        if include_usage:
            yield sse(reply.chunk([], usage=used))
        yield DONE
    finally:
        progress.stop.set()
