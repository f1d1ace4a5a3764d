"""Multi-turn chat over a one-slot SequenceBatch that keeps its cache between turns.

    send(message) ─ render the conversation ─ tokens after what the cache holds
        ─ Generation ─ (iterated) extend or admit ─ decode_loop ─ record the turn

The cache cannot be rewound (the CCA state has no undo), so after a turn we remember the
rendered conversation text the cache corresponds to; the next turn feeds only the template
text that follows it. Anything inconsistent (a stop string cut the reply, an abandoned
stream, a template that renders history differently) starts over.
"""

from __future__ import annotations

import functools
import time
import weakref
from typing import TYPE_CHECKING, Callable, Iterator

from zaya_edge.errors import RequestError

from .generation import Generation, GenerationStats, decode_loop
from .sequence import SequenceState, StepEvent
from .types import Request, SamplingParams

if TYPE_CHECKING:
    from .engine import Engine

_SEQ = 0  # the one sequence's id in the batch


class ChatSession:
    """A conversation: `send(message)` returns the reply's Generation; `reset()` starts over."""

    def __init__(self, engine: "Engine", params: SamplingParams, system: str | None = None):
        self.engine = engine
        self.params = params
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        # a new conversation (or one started over) begins from the engine's cached prompts
        self._batch = engine.new_batch(1, 1024)
        self._resume: tuple[str, int | None] | None = None  # (text the cache holds, token sampled but not fed)
        self.history: list[int] = []  # token ids in the cache
        self._turn_ref: Callable[[], Generation | None] = lambda: None  # the last turn, weakly
        self._unstarted = False  # the last turn was sent but its stream never started

    def reset(self) -> None:
        self._close_turn()
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self._forget()

    def _forget(self) -> None:
        self._resume = None
        self.history = []
        self._batch.reset()

    def _close_turn(self) -> None:
        """Finish an unfinished previous turn now, so the cache and history agree again."""
        turn = self._turn_ref()
        if turn is not None:
            turn.close()
        if self._unstarted:  # sent but never read: the model never saw it, so it is not kept
            self.messages.pop()
            self._unstarted = False

    def send(self, message: str) -> Generation:
        """Add a user turn; iterate the result for the reply (recorded when fully read)."""
        if not message.strip():
            raise RequestError("empty message")
        self._close_turn()
        self.messages.append({"role": "user", "content": message})
        try:
            prompt_text = self.engine.codec.render_chat(self.messages)
            new_tokens = self._tokens_after_cache(prompt_text)
            request = Request(tuple(self.history + new_tokens), self.params)
            self.engine.check(request)
        except BaseException:
            self.messages.pop()  # a turn that cannot run is not kept: the conversation goes on without it
            raise
        gen = Generation([request], functools.partial(self._turn, request, new_tokens, prompt_text))
        self._turn_ref = weakref.ref(gen)
        self._unstarted = True
        return gen

    def _tokens_after_cache(self, prompt_text: str) -> list[int]:
        """The tokens to feed after what the cache holds; all of them when it cannot continue."""
        codec = self.engine.codec
        if self._resume is not None and prompt_text.startswith(self._resume[0]):
            tail = codec.encode(prompt_text[len(self._resume[0]) :])
            unfed = self._resume[1]
            if unfed is None or (tail and tail[0] == unfed):
                return tail
            if unfed not in self.engine.eos_token_ids:
                return [unfed] + tail  # the reply was cut by length: its last token is part of it
        self._forget()
        return codec.encode(prompt_text)

    def _turn(
        self, request: Request, new_tokens: list[int], prompt_text: str, cancelled: Callable[[], bool], stats: GenerationStats
    ) -> Iterator[list[StepEvent]]:
        self._unstarted = False
        seq = SequenceState(_SEQ, request, self.engine.eos_token_ids, self.engine.tokenizer)
        start = time.perf_counter()
        try:
            if _SEQ in self._batch:
                seq.logits = self._batch.extend(_SEQ, new_tokens)
            else:
                seq.logits = self._batch.admit({_SEQ: new_tokens})[_SEQ]
        except BaseException:  # the prompt never ran whole: drop the turn, rebuild the cache next time
            self.messages.pop()
            self._forget()
            raise
        done = False
        try:
            yield from decode_loop(self._batch, {_SEQ: seq}, cancelled, stats, start)
            done = True
        finally:
            stats.add_batch(self._batch.take_stats(), len(new_tokens), self.engine.session.load_seconds)
            self.messages.append({"role": "assistant", "content": seq.text})
            self._record(request, prompt_text, seq, done)

    def _record(self, request: Request, prompt_text: str, seq: SequenceState, done: bool) -> None:
        """What the cache holds after the turn, or start over when that is not known."""
        reason = seq.finish_reason
        if done and reason in ("eos", "length", "cancelled"):
            unfed = seq.tokens[-1] if reason != "cancelled" and seq.tokens else None
            self._resume = (prompt_text + seq.text, unfed)
            self.history = list(request.prompt_ids) + (seq.tokens[:-1] if unfed is not None else seq.tokens)
        else:
            self._forget()
