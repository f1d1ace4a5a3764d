"""The reply budget that fits the context, for `run` and `chat`.

A --max-new-tokens a person gave is theirs: if it cannot fit, that is one clear error. The
default (512) is only a ceiling: where it cannot fit, the reply gets what room is left, and a
notice says so.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from zaya_edge.errors import ContextFullError

if TYPE_CHECKING:
    from zaya_edge.runtime import ChatSession, Generation

FLAG = "--max-new-tokens"


def clamp_notice(requested: int, prompt: int, context: int, budget: int) -> str:
    return f"max_new_tokens {requested} does not fit the context (prompt {prompt} of {context}): clamped to {budget}"


def fit_budget(prompt: int, context: int, requested: int, explicit: bool, notice: Callable[[str], None]) -> int:
    """The max new tokens for a prompt of `prompt` tokens: `requested`, or the room left when a default is too big."""
    room = context - prompt
    if requested <= room:
        return requested
    if room < 1:
        raise ContextFullError(f"the prompt ({prompt} tokens) does not fit the context length {context}; shorten it")
    if explicit:
        raise ContextFullError(f"{FLAG} {requested} does not fit the context (prompt {prompt} of {context} tokens): "
                               f"at most {room} fits")
    notice(clamp_notice(requested, prompt, context, room))
    return room


def send_fitting(session: "ChatSession", message: str, explicit: bool, notice: Callable[[str], None]) -> "Generation":
    """`session.send(message)`; a default budget that cannot fit is lowered to what room is left.

    The room is estimated from the whole conversation re-encoded (the cache may hold a slightly
    different tokenization), then confirmed by sending: a send that cannot fit raises before
    anything runs and keeps the conversation as it was, so each try costs no model call. The
    first send that fits is the turn. When nothing fits, the first ContextFullError propagates.
    """
    requested = session.params.max_new_tokens
    first = _try(session, message, requested)
    if not isinstance(first, ContextFullError):
        return first
    if explicit:
        raise first
    context = session.engine.context_length
    turn = session.messages + [{"role": "user", "content": message}]
    budget, step = min(requested - 1, context - len(session.engine.codec.chat_ids(turn))), 1
    while budget >= 1:
        got = _try(session, message, budget)
        if not isinstance(got, ContextFullError):
            notice(clamp_notice(requested, context - budget, context, budget))
            return got
        budget, step = budget - step, step * 2
    raise first


def _try(session: "ChatSession", message: str, budget: int) -> "Generation | ContextFullError":
    """One send with `budget` max new tokens; the session keeps its own params."""
    params = session.params
    session.params = dataclasses.replace(params, max_new_tokens=budget)
    try:
        return session.send(message)
    except ContextFullError as exc:
        return exc
    finally:
        session.params = params
