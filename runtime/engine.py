"""The engine: load an artifact once, then generate — streamed, batched, or as a chat.

    Engine (owns the session, tokenizer, defaults)
      ├─ generate(prompt)        -> Generation: iterate text deltas, cancel(), stats
      ├─ generate_batch(requests) -> [Completion]  (one session call per step for all)
      └─ chat()                  -> ChatSession: keeps the cache between turns

Every path runs the same decode loop (`_decode_loop`); only how sequences enter it differs.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from zaya_edge.errors import ZayaEdgeError
from zaya_edge.memory import peak_rss_bytes

from .batch import BatchDecoder
from .sampling import make_rng, sample
from .session import DecoderSession
from .tokenizer import StreamDecoder, Tokenizer
from .types import BatchProgress, Completion, Request, SamplingParams


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

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class StepEvent:
    """What one sequence did in one step."""

    index: int  # the request's position
    token: int
    text: str  # new text (may be empty while a character's bytes are incomplete)
    finish_reason: str | None


class _Sequence:
    """One request's generation state: sampler, stop rules, streamed text."""

    def __init__(self, index: int, request: Request, engine: "Engine"):
        self.index = index
        self.request = request
        self.params = request.params
        self.rng = make_rng(request.params.seed)
        self.tokens: list[int] = []
        self.seen = set(request.prompt_ids) if request.params.repetition_penalty != 1.0 else set()
        self.stop_ids = set(request.params.stop_token_ids)
        if not request.params.ignore_eos:
            self.stop_ids |= set(engine.eos_token_ids)
        self.decoder = StreamDecoder(engine.tokenizer) if engine.tokenizer else None
        self.text = ""
        self._emitted = 0  # characters of text already streamed
        self.finish_reason: str | None = None
        self.logits: np.ndarray | None = None

    def step(self) -> StepEvent:
        """Sample from the current logits, update text and stop state."""
        seen = np.fromiter(self.seen, dtype=np.int64) if self.seen else np.empty(0, np.int64)
        token = sample(self.logits, self.params, self.rng, seen)
        self.logits = None  # consumed: the token must be fed before sampling again
        self.tokens.append(token)
        if self.params.repetition_penalty != 1.0:
            self.seen.add(token)
        if token in self.stop_ids:
            self.finish_reason = "stop" if token in self.params.stop_token_ids else "eos"
            if self.decoder is not None:
                self._add_text(self.decoder.flush())
        elif self.decoder is not None:
            self._add_text(self.decoder.push(token))
        if self.finish_reason is None and len(self.tokens) >= self.params.max_new_tokens:
            self.finish_reason = "length"
            if self.decoder is not None:
                self._add_text(self.decoder.flush())
        return StepEvent(self.index, token, self._emit(), self.finish_reason)

    def _add_text(self, delta: str) -> None:
        """Append decoded text; a stop string ends the sequence and is cut off."""
        if not delta:
            return
        before = len(self.text)
        self.text += delta
        if self.params.stop_strings:
            window = max(0, before - max(len(s) for s in self.params.stop_strings) + 1)
            hits = [i for s in self.params.stop_strings if (i := self.text.find(s, window)) >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.finish_reason = "stop"

    def _emit(self) -> str:
        """New text that can be shown: hold back a tail that may still become a stop string."""
        end = len(self.text)
        if self.finish_reason is None and self.params.stop_strings:
            for s in self.params.stop_strings:
                for k in range(min(len(s) - 1, end - self._emitted), 0, -1):
                    if self.text.endswith(s[:k]):
                        end = min(end, len(self.text) - k)
                        break
        out = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return out

    def cancel(self) -> StepEvent:
        self.finish_reason = "cancelled"
        return StepEvent(self.index, -1, self._emit(), "cancelled")

    def completion(self) -> Completion:
        return Completion(list(self.tokens), self.text, self.finish_reason or "cancelled", len(self.request.prompt_ids))


class Engine:
    """A loaded artifact. Thread-compatible: one generation at a time per engine."""

    def __init__(self, session: DecoderSession, tokenizer: Tokenizer | None, max_batch: int = 16):
        self.session = session
        self.manifest = session.manifest
        self.dims = session.dims
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        gen_cfg_path = session.folder / "generation_config.json"
        gen_cfg = json.loads(gen_cfg_path.read_text()) if gen_cfg_path.exists() else {}
        eos = gen_cfg.get("eos_token_id", self.dims.eos_token_id)
        self.eos_token_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        if tokenizer is not None:
            end = tokenizer.token_id("<|im_end|>")
            if end is not None and end not in self.eos_token_ids:
                self.eos_token_ids.append(end)  # a chat turn ends there

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        provider: str = "cpu",
        verify: bool = False,
        custom_ops: str | bool | None = None,
        max_batch: int = 16,
    ) -> "Engine":
        session = DecoderSession(path, threads=threads, provider=provider, verify=verify, custom_ops=custom_ops)
        folder = Path(path)
        tokenizer = Tokenizer(folder) if (folder / "tokenizer.json").exists() else None
        return cls(session, tokenizer, max_batch=max_batch)

    # ---- facts ---------------------------------------------------------------------------
    @property
    def codec(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ZayaEdgeError("this artifact has no tokenizer: text in and out needs tokenizer.json")
        return self.tokenizer

    @property
    def context_length(self) -> int:
        return self.manifest.context_length

    def cache_bytes_per_sequence(self, length: int) -> int:
        return self.dims.kv_bytes_per_token * length + self.dims.fixed_state_bytes

    # ---- requests ------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | Sequence[int], chat: bool = True) -> tuple[int, ...]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ZayaEdgeError("empty prompt")
            ids = self.codec.chat_prompt(prompt) if chat else self.codec.encode(prompt, add_special_tokens=True)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ZayaEdgeError("empty prompt")
        bad = [t for t in ids if not 0 <= t < self.dims.vocab_size]
        if bad:
            raise ZayaEdgeError(f"token id {bad[0]} is outside the vocabulary (size {self.dims.vocab_size})")
        return tuple(ids)

    def _check(self, request: Request) -> None:
        n = len(request.prompt_ids)
        if n == 0:
            raise ZayaEdgeError("empty prompt")
        if n + request.params.max_new_tokens > self.context_length:
            raise ZayaEdgeError(
                f"prompt ({n} tokens) + max_new_tokens ({request.params.max_new_tokens}) exceeds the context "
                f"length {self.context_length}; shorten the prompt or lower max_new_tokens"
            )

    # ---- the decode loop -------------------------------------------------------------------
    def _decode_loop(
        self,
        dec: BatchDecoder,
        active: list[_Sequence],
        pending: collections.deque,
        admit: Callable[[_Sequence, int], None],
        cancelled: Callable[[], bool],
        stats: GenerationStats,
        start: float,
        keep_finished: bool = False,
    ) -> Iterator[list[StepEvent]]:
        """Sample, retire finished rows, refill from `pending`, step — until all are done.

        `active[r]` is the sequence in cache row r; rows stay a contiguous prefix. `start` is
        when the request began (time to first token includes the prefill).
        """
        first_token_at = None
        generated = 0
        while active:
            if cancelled():
                yield [seq.cancel() for seq in active]
                return
            events = [seq.step() for seq in active if seq.logits is not None]
            generated += len(events)
            if first_token_at is None:
                first_token_at = time.perf_counter()
                stats.time_to_first_token_s = first_token_at - start
            yield events
            # retire: move the last row into each finished row
            r = 0
            while r < len(active):
                if active[r].finish_reason is None:
                    r += 1
                    continue
                last = len(active) - 1
                if r != last:
                    dec.cache.copy_row(last, r)
                    active[r] = active[last]
                if not keep_finished:  # a chat keeps its one row for the next turn
                    dec.cache.clear_row(last)
                active.pop()
            while pending and len(active) < dec.slots:
                seq = pending.popleft()
                admit(seq, len(active))
                active.append(seq)
            if not active:
                break
            if any(s.logits is not None for s in active):
                continue  # sequences just admitted sample their first token before the next step
            logits = dec.decode(len(active), [s.tokens[-1] for s in active])
            for seq, row in zip(active, logits):
                seq.logits = row
        elapsed = time.perf_counter() - (first_token_at or start)
        stats.generated_tokens += generated
        stats.decode_tokens_per_s = (generated - 1) / elapsed if elapsed > 0 and generated > 1 else 0.0

    def _run(self, seqs: list[_Sequence], cancelled: Callable[[], bool], stats: GenerationStats) -> Iterator[list[StepEvent]]:
        """Admit sequences: distinct prompts are prefilled once (left-padded together) and
        forked into the other rows; later arrivals are prefilled aside and restored."""
        if not seqs:
            return
        for s in seqs:
            self._check(s.request)
        slots = min(len(seqs), self.max_batch)
        longest = max(len(s.request.prompt_ids) + s.params.max_new_tokens for s in seqs)
        start = time.perf_counter()
        dec = BatchDecoder(self.session, slots, capacity=longest)
        first, pending = seqs[:slots], collections.deque(seqs[slots:])
        distinct = list(dict.fromkeys(s.request.prompt_ids for s in first))
        logits = dec.prefill(0, [list(p) for p in distinct])
        active: list[_Sequence] = [None] * len(first)
        fork_row = len(distinct)
        for row, prompt in enumerate(distinct):
            head, *rest = [s for s in first if s.request.prompt_ids == prompt]
            active[row] = head
            head.logits = logits[row]
            for seq in rest:
                dec.cache.copy_row(row, fork_row)
                active[fork_row] = seq
                seq.logits = logits[row]
                fork_row += 1
        later = {s.request.prompt_ids for s in pending}
        prefixes = {p: (dec.cache.snapshot(r), logits[r].copy()) for r, p in enumerate(distinct) if p in later}

        def admit(seq: _Sequence, row: int) -> None:
            p = seq.request.prompt_ids
            if p not in prefixes:
                side = BatchDecoder(self.session, 1, capacity=len(p))
                side_logits = side.prefill(0, [list(p)])[0].copy()
                dec.prefill_tokens += side.prefill_tokens
                dec.prefill_seconds += side.prefill_seconds
                dec.calls += side.calls
                prefixes[p] = (side.cache.snapshot(0), side_logits)
            state, row_logits = prefixes[p]
            dec.cache.restore(state, row)
            seq.logits = row_logits

        try:
            yield from self._decode_loop(dec, active, pending, admit, cancelled, stats, start)
        finally:
            self._finish_stats(stats, dec, sum(len(s.request.prompt_ids) for s in seqs))

    def _finish_stats(self, stats: GenerationStats, dec: BatchDecoder, prompt_tokens: int) -> None:
        stats.load_seconds = self.session.load_seconds
        stats.prompt_tokens += prompt_tokens
        stats.prefill_tokens_per_s = dec.prefill_tokens / dec.prefill_seconds if dec.prefill_seconds else 0.0
        stats.session_calls += dec.calls
        stats.cache_bytes = max(stats.cache_bytes, dec.cache.nbytes)
        stats.peak_rss_bytes = peak_rss_bytes()

    # ---- public entry points ---------------------------------------------------------------
    def generate_batch(
        self,
        requests: Sequence[Request],
        on_progress: Callable[[BatchProgress], bool | None] | None = None,
    ) -> list[Completion]:
        """All requests together; `on_progress` returning False cancels what is left."""
        seqs = [_Sequence(i, r, self) for i, r in enumerate(requests)]
        self.last_stats = stats = GenerationStats()
        stop = threading.Event()
        t0 = time.perf_counter()
        generated = finished = 0
        for events in self._run(seqs, stop.is_set, stats):
            generated += sum(1 for e in events if e.token >= 0)
            finished += sum(1 for e in events if e.finish_reason)
            if on_progress is not None:
                progress = BatchProgress(len(seqs) - finished, finished, generated, time.perf_counter() - t0)
                if on_progress(progress) is False:
                    stop.set()
        return [s.completion() for s in seqs]

    def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None, *, chat: bool = True) -> "Generation":
        """Stream one request: iterate the returned Generation for text deltas."""
        request = Request(self.encode_prompt(prompt, chat=chat), params or SamplingParams())
        self._check(request)
        return Generation(self, [request])

    def chat(self, params: SamplingParams | None = None, system: str | None = None) -> "ChatSession":
        return ChatSession(self, params or SamplingParams(), system)


class Generation:
    """A streaming request: `for text in gen`, `gen.cancel()` from any thread, `gen.stats`."""

    def __init__(self, engine: Engine, requests: list[Request], runner=None):
        self.engine = engine
        self.requests = requests
        self.stats = GenerationStats()
        self._cancel = threading.Event()
        self._runner = runner
        self.completion: Completion | None = None
        self.tokens: list[int] = []

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[str]:
        runner = self._runner or self.engine._run(
            [_Sequence(i, r, self.engine) for i, r in enumerate(self.requests)], self._cancel.is_set, self.stats
        )
        text = []
        finish = None
        for events in runner:
            for e in events:
                if e.token >= 0:
                    self.tokens.append(e.token)
                if e.text:
                    text.append(e.text)
                    yield e.text
                finish = e.finish_reason or finish
        self.completion = Completion(self.tokens, "".join(text), finish or "cancelled", len(self.requests[0].prompt_ids))

    def text(self) -> str:
        return "".join(self)


class ChatSession:
    """Multi-turn chat that keeps its cache: each turn prefills only the new tokens.

    The cache cannot be rewound (the CCA state has no undo), so after a turn we remember the
    rendered conversation text the cache corresponds to; the next turn feeds only the
    template text that follows it. Anything inconsistent (a stop string cut the reply, an
    abandoned stream, a template that renders history differently) starts over.
    """

    def __init__(self, engine: Engine, params: SamplingParams, system: str | None = None):
        self.engine = engine
        self.params = params
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.dec = BatchDecoder(engine.session, 1, capacity=1024)
        self._resume: tuple[str, int | None] | None = None  # (text the cache holds, token sampled but not fed)
        self.history: list[int] = []  # token ids in the cache

    def reset(self) -> None:
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self._forget()

    def _forget(self) -> None:
        self._resume = None
        self.history = []
        self.dec.cache.reset()

    def send(self, message: str) -> Generation:
        """Add a user turn; iterate the result for the reply (recorded when fully read)."""
        if not message.strip():
            raise ZayaEdgeError("empty message")
        codec = self.engine.codec
        self.messages.append({"role": "user", "content": message})
        prompt_text = codec.render_chat(self.messages)
        new_tokens = None
        if self._resume is not None and prompt_text.startswith(self._resume[0]):
            tail = codec.encode(prompt_text[len(self._resume[0]) :])
            unfed = self._resume[1]
            if unfed is None or (tail and tail[0] == unfed):
                new_tokens = tail
            elif unfed not in self.engine.eos_token_ids:
                new_tokens = [unfed] + tail  # the reply was cut by length: its last token is part of it
        if new_tokens is None:
            self._forget()
            new_tokens = codec.encode(prompt_text)
        request = Request(tuple(self.history + new_tokens), self.params)
        self.engine._check(request)
        gen = Generation(self.engine, [request])
        gen._runner = self._turn(gen, request, new_tokens, prompt_text)
        return gen

    def _turn(self, gen: Generation, request: Request, new_tokens: list[int], prompt_text: str) -> Iterator[list[StepEvent]]:
        seq = _Sequence(0, request, self.engine)
        t0 = time.perf_counter()
        if self.history:
            seq.logits = self.dec.extend(0, new_tokens)
        else:
            seq.logits = self.dec.prefill(0, [new_tokens])[0]
        done = False
        try:
            yield from self.engine._decode_loop(self.dec, [seq], collections.deque(), None, gen._cancel.is_set, gen.stats, t0, keep_finished=True)
            done = True
        finally:
            self.engine._finish_stats(gen.stats, self.dec, len(new_tokens))
            self.messages.append({"role": "assistant", "content": seq.text})
            reason = seq.finish_reason
            if done and reason in ("eos", "length", "cancelled"):
                unfed = seq.tokens[-1] if reason != "cancelled" and seq.tokens else None
                self._resume = (prompt_text + seq.text, unfed)
                self.history = list(request.prompt_ids) + (seq.tokens[:-1] if unfed is not None else seq.tokens)
            else:
                self._forget()
