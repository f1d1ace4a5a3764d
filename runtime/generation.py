"""A generation: the decode loop every path runs, its figures, and the handle a caller streams.

    engine / chat ─ decode_loop(batch, live) ─ [StepEvent] per step ─> Generation ─ text ─> caller
                      sample · hand out · retire + refill (+ a prefill piece) · batch.step

A Generation makes its event stream once, from the `source` it is given, and the stream
never refers back to it: no reference cycle, so a dropped or closed stream is cleaned up at
once (a chat turn then records itself), not at the next cyclic garbage collection.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Iterator, Optional

from zaya_edge.memory import peak_rss_bytes

from .batch import BatchStats, SequenceBatch
from .sequence import SequenceState, StepEvent
from .types import Completion, Request


@dataclasses.dataclass
class GenerationStats:
    load_seconds: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    time_to_first_token_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    session_calls: int = 0
    cache_bytes: int = 0
    peak_rss_bytes: int = 0
    prefill_tokens: int = 0  # prompt tokens computed (shared and cached prefixes are not)
    prefix_hits: int = 0  # prompts (and shared heads) started from the prefix cache
    prefix_tokens_reused: int = 0  # tokens restored from it instead of computed

    def add_batch(self, batch: BatchStats, prompt_tokens: int, load_seconds: float) -> None:
        """Fold in what the batch cost for this generation (or this chat turn)."""
        self.load_seconds = load_seconds
        self.prompt_tokens += prompt_tokens
        self.prefill_tokens_per_s = batch.prefill_tokens_per_s
        self.session_calls += batch.calls
        self.prefill_tokens += batch.prefill_tokens
        self.prefix_hits += batch.prefix_hits
        self.prefix_tokens_reused += batch.prefix_tokens_reused
        self.cache_bytes = max(self.cache_bytes, batch.cache_bytes)
        self.peak_rss_bytes = peak_rss_bytes()


Refill = Callable[[list[int], dict[int, SequenceState]], Optional[bool]]


def decode_loop(
    batch: SequenceBatch,
    live: dict[int, SequenceState],
    cancelled: Callable[[], bool],
    stats: GenerationStats,
    start: float,
    refill: Refill | None = None,
) -> Iterator[list[StepEvent]]:
    """Sample, hand the events out, drop finished sequences, refill, step the rest: until none is
    live and none is on its way in.

    `live` maps batch ids to sequences that hold logits. `refill(finished, live)` may retire
    the finished from the batch and admit waiting ones into `live` (with their logits); it returns
    True while sequences are still being prefilled (a piece per step: admission.py), which keeps
    the loop going with none live. Without it, finished sequences stay in the batch (a chat keeps
    its row). `start` is when the request began: the time to first token includes the prefill.
    """
    first_token_at = None
    generated = 0
    coming = False
    try:
        while live or coming:
            if cancelled():
                yield [seq.cancel() for seq in live.values()]
                return
            events = [seq.step() for seq in live.values() if seq.logits is not None]
            if events:
                generated += len(events)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    stats.time_to_first_token_s = first_token_at - start
                yield events
            finished = [i for i, seq in live.items() if seq.finish_reason is not None]
            for i in finished:
                del live[i]
            if refill is not None:
                coming = bool(refill(finished, live))
            if any(seq.logits is not None for seq in live.values()):
                continue  # sequences just admitted sample their first token before the next step
            if live:
                for i, logits in batch.step({i: seq.tokens[-1] for i, seq in live.items()}).items():
                    live[i].logits = logits
    finally:
        elapsed = time.perf_counter() - (first_token_at or start)
        stats.generated_tokens += generated
        stats.decode_tokens_per_s = (generated - 1) / elapsed if elapsed > 0 and generated > 1 else 0.0


Source = Callable[[Callable[[], bool], GenerationStats], Iterator[list[StepEvent]]]


class Generation:
    """A streaming request: `for text in gen`, `gen.cancel()` from any thread, `gen.stats`.

    `source(cancelled, stats)` makes the stream of step events; nothing runs until iterated.
    """

    def __init__(self, requests: list[Request], source: Source):
        self.requests = requests
        self.stats = GenerationStats()
        self._cancel = threading.Event()
        self._events = source(self._cancel.is_set, self.stats)
        self._text: list[str] = []
        self._finish: str | None = None
        self.completion: Completion | None = None
        self.tokens: list[int] = []

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        """Abandon the stream now: its cleanup runs here, not when the object is collected."""
        self._events.close()

    def __iter__(self) -> Iterator[str]:
        for events in self._events:
            for e in events:
                if e.token >= 0:
                    self.tokens.append(e.token)
                if e.text:
                    self._text.append(e.text)
                    yield e.text
                self._finish = e.finish_reason or self._finish
        if self.completion is None:
            text = "".join(self._text)
            self.completion = Completion(self.tokens, text, self._finish or "cancelled", len(self.requests[0].prompt_ids))

    def text(self) -> str:
        return "".join(self)
