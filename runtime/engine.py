"""The engine: load an artifact once, then generate — streamed, batched, or as a chat.

    Engine (owns the session, tokenizer, defaults; decides who enters the batch when)
      ├─ generate(prompt)         -> Generation: iterate text deltas, cancel(), stats
      ├─ generate_batch(requests) -> [Completion]  (one session call per step for all)
      ├─ chat()                   -> ChatSession: keeps its cache between turns (chat.py)
      └─ prefix_cache             -> PrefixCache: prefilled prefixes every batch reuses (prefix_cache.py)

Every path runs the same decode loop (generation.py) over a SequenceBatch (batch.py); the
engine only chooses which sequences enter it: `Admission` (admission.py).
"""

from __future__ import annotations

import numbers
import functools
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from zaya_edge.errors import ContextFullError, RequestError

from .admission import Admission
from .batch import SequenceBatch, check_tokens_option
from .cache import bytes_per_sequence
from .chat import ChatSession
from .generation import Generation, GenerationStats, decode_loop
from .prefix_cache import DEFAULT_BYTES, PrefixCache, check_bytes
from .sequence import SequenceState, StepEvent
from .session import DecoderSession
from .tokenizer import Tokenizer
from .types import BatchProgress, Completion, Request, SamplingParams


def stop_token_ids(artifact, tokenizer: Tokenizer | None) -> list[int]:
    """The tokens that end a generation: the artifact's eos ids, and ChatML's end of turn."""
    ids = list(artifact.eos_token_ids)
    end = tokenizer.token_id("<|im_end|>") if tokenizer is not None else None
    if end is not None and end not in ids:
        ids.append(end)  # a chat turn ends there
    return ids


class Engine:
    """A loaded artifact. Thread-compatible: one generation at a time per engine.

    `prefix_cache` bounds, in bytes, the prefilled prefixes kept for reuse across batches, chat
    turns and RSA rounds (0 = none: every prompt is prefilled, identical ones still once).
    `prefill_chunk` tokens per prefill call bound its activation memory (None: 512); a prompt that
    arrives while others decode is prefilled `prefill_budget` tokens (None: one chunk) per step
    of theirs, so it never stalls them longer than that.
    """

    def __init__(self, session: DecoderSession, tokenizer: Tokenizer | None, max_batch: int = 16,
                 prefix_cache: int = DEFAULT_BYTES, prefill_chunk: int | None = None,
                 prefill_budget: int | None = None):
        self.session = session
        self.prefix_cache = PrefixCache(prefix_cache)
        self.prefill_chunk = check_tokens_option("prefill_chunk", prefill_chunk)
        self.prefill_budget = check_tokens_option("prefill_budget", prefill_budget)
        self.manifest = session.manifest
        self.dims = session.dims
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.eos_token_ids = stop_token_ids(session.artifact, tokenizer)

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
        prefix_cache: int = DEFAULT_BYTES,
        prefill_chunk: int | None = None,
        prefill_budget: int | None = None,
    ) -> "Engine":
        check_bytes(prefix_cache)  # before the minutes a large artifact takes to load
        check_tokens_option("prefill_chunk", prefill_chunk)
        check_tokens_option("prefill_budget", prefill_budget)
        session = DecoderSession(path, threads=threads, provider=provider, verify=verify, custom_ops=custom_ops)
        tokenizer = Tokenizer.from_artifact(session.artifact)
        return cls(session, tokenizer, max_batch=max_batch, prefix_cache=prefix_cache,
                   prefill_chunk=prefill_chunk, prefill_budget=prefill_budget)

    # ---- facts ---------------------------------------------------------------------------
    @property
    def codec(self) -> Tokenizer:
        if self.tokenizer is None:
            raise RequestError("this artifact has no tokenizer: text in and out needs tokenizer.json")
        return self.tokenizer

    @property
    def context_length(self) -> int:
        return self.manifest.context_length

    @property
    def model_id(self) -> str:
        """The sha256 of the artifact's manifest: names the model (and its files, by their hashes)."""
        return self.session.artifact.manifest_sha256

    def cache_bytes_per_sequence(self, length: int) -> int:
        """The cache one sequence of `length` tokens allocates (what max_memory plans with)."""
        return bytes_per_sequence(self.dims, length, self.session.manifest.kv_bytes_per_token)

    # ---- requests ------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | Sequence[int], chat: bool = True) -> tuple[int, ...]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise RequestError("empty prompt")
            if not chat:
                self.codec.check_fits(prompt)  # before tokenizing: the chat path's template is bounded the same
            ids = self.codec.chat_prompt(prompt) if chat else self.codec.encode(prompt, add_special_tokens=True)
        else:
            ids = list(prompt)  # checked as they are: 2.7 is refused, not read as 2
        if not ids:
            raise RequestError("empty prompt")
        self._check_ids(ids)
        return tuple(ids)

    def _check_ids(self, ids: Sequence[int]) -> None:
        vocab = self.dims.vocab_size
        bad = [t for t in ids if not isinstance(t, numbers.Integral) or isinstance(t, bool) or not 0 <= t < vocab]
        if bad:
            raise RequestError(f"token id {bad[0]!r} is outside the vocabulary (size {self.dims.vocab_size})")

    def check(self, request: Request) -> None:
        """Refuse a request that cannot run: empty, ids outside the vocabulary, longer than the context.

        Every entry point comes through here (generate, generate_batch, chat), so a caller of the
        Python API gets the same checks as the CLI.
        """
        n = len(request.prompt_ids)
        if n == 0:
            raise RequestError("empty prompt")
        self._check_ids(request.prompt_ids)
        if n + request.params.max_new_tokens > self.context_length:
            raise ContextFullError(
                f"prompt ({n} tokens) + max_new_tokens ({request.params.max_new_tokens}) exceeds the context "
                f"length {self.context_length}; shorten the prompt or lower max_new_tokens"
            )

    def new_batch(self, slots: int, capacity: int) -> SequenceBatch:
        """A batch over this engine's session, its prefix cache and prefill policy."""
        return SequenceBatch(self.session, slots, capacity=capacity, prefix_cache=self.prefix_cache,
                             prefill_chunk=self.prefill_chunk, prefill_budget=self.prefill_budget)

    def _states(self, requests: Sequence[Request]) -> list[SequenceState]:
        return [SequenceState(i, r, self.eos_token_ids, self.tokenizer) for i, r in enumerate(requests)]

    def _run(self, seqs: list[SequenceState], cancelled: Callable[[], bool], stats: GenerationStats) -> Iterator[list[StepEvent]]:
        """All sequences (checked by the caller) through one batch of up to max_batch slots."""
        if not seqs:
            return
        start = time.perf_counter()
        longest = max(len(s.request.prompt_ids) + s.params.max_new_tokens for s in seqs)
        batch = self.new_batch(min(len(seqs), self.max_batch), longest)
        try:
            admission = Admission(batch, seqs)
            yield from decode_loop(batch, admission.start(), cancelled, stats, start, admission.refill)
        finally:
            prompt_tokens = sum(len(s.request.prompt_ids) for s in seqs)
            stats.add_batch(batch.take_stats(), prompt_tokens, self.session.load_seconds)

    # ---- public entry points ---------------------------------------------------------------
    def generate_batch(
        self,
        requests: Sequence[Request],
        on_progress: Callable[[BatchProgress], bool | None] | None = None,
    ) -> list[Completion]:
        """All requests together; `on_progress` returning False cancels what is left."""
        self.last_stats = stats = GenerationStats()
        stop = threading.Event()
        t0 = time.perf_counter()
        generated = finished = 0
        for r in requests:  # every request, before any of them runs
            self.check(r)
        seqs = self._states(requests)
        for events in self._run(seqs, stop.is_set, stats):
            generated += sum(1 for e in events if e.token >= 0)
            finished += sum(1 for e in events if e.finish_reason)
            if on_progress is not None:
                progress = BatchProgress(len(requests) - finished, finished, generated, time.perf_counter() - t0)
                if on_progress(progress) is False:
                    stop.set()
        return [s.completion() for s in seqs]

    def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None, *, chat: bool = True) -> Generation:
        """Stream one request: iterate the returned Generation for text deltas."""
        request = Request(self.encode_prompt(prompt, chat=chat), params or SamplingParams())
        self.check(request)
        return Generation([request], functools.partial(self._run, self._states([request])))

    def chat(self, params: SamplingParams | None = None, system: str | None = None) -> ChatSession:
        return ChatSession(self, params or SamplingParams(), system)
