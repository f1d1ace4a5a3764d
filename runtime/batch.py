"""A batch of sequences over one private state cache: the only code that knows about rows.

    SequenceBatch (owns the StateCache)
      ├─ admit({id: prompt | Prefilled}) -> {id: logits}   into free slots
      ├─ fork(src, dst)                                    copy a prefilled sequence
      ├─ extend(id, tokens)             -> logits          append tokens (a chat turn)
      ├─ step({id: token})              -> {id: logits}    one session call for all live
      ├─ save(id, logits)               -> Prefilled       a prompt's state, for later arrivals
      ├─ defer([prompt])                -> [PendingPrefill] prompts to prefill a chunk at a time (pending.py)
      ├─ retire(id), reset()                               free slots
      └─ take_stats()                   -> BatchStats      prefill work, prefix hits, calls, cache bytes

Live sequences always fill the rows [0, n) (a retired row takes the last row's sequence), so
their state is one contiguous view that is bound in place and reused step after step (see
cache.py). Left padding is exact only on rows whose state is still zero, so a sequence that
arrives while others are live is prefilled aside, in a one-row batch, and its state moved in:
at once by `admit`, or a chunk per decode step of the live rows through `defer` (pending.py), so
a long prompt does not stall them.

With a PrefixCache (prefix_cache.py), admit starts each prompt from the longest cached prefix
of it: the heads several prompts share are computed once first, aside, and cached; each prompt
then continues aside from its head (or is restored whole) and moves in. A snapshot at a prefix's
end is exact, so this changes no logits; only the work.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from typing import Hashable, Mapping, Sequence

import numpy as np

from zaya_edge import artifact as A
from zaya_edge.errors import RequestError

from .cache import StateCache
from .pending import PendingPrefill
from .prefix_cache import MIN_REUSE, Prefilled, PrefixCache, shared_heads
from .session import DecoderSession, bind

PREFILL_CHUNK = 512  # tokens per prefill call: bounds activation memory on long prompts


def check_tokens_option(name: str, value) -> int | None:
    """The one rule for prefill_chunk and prefill_budget: None (the default) or a whole number >= 1."""
    if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1):
        raise RequestError(f"{name} must be a number of tokens >= 1, got {value!r}")
    return None if value is None else int(value)


@dataclasses.dataclass
class BatchStats:
    """What a batch cost since it was made (or since the last `take_stats`)."""

    prefill_tokens: int = 0  # computed: tokens restored from the prefix cache are not
    prefill_seconds: float = 0.0
    calls: int = 0  # session calls, prefills aside included
    cache_bytes: int = 0  # the cache's size: it only grows, so this is the largest it was
    prefix_hits: int = 0  # prompts (and shared heads) started from a cached prefix
    prefix_tokens_reused: int = 0  # tokens restored from the prefix cache instead of computed

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    def add_work(self, other: "BatchStats", seconds: bool = False) -> None:
        """Count a batch aside's work as this one's (and its time, when no outer admit times it)."""
        self.prefill_seconds += other.prefill_seconds if seconds else 0.0
        self.prefill_tokens += other.prefill_tokens
        self.calls += other.calls
        self.prefix_hits += other.prefix_hits
        self.prefix_tokens_reused += other.prefix_tokens_reused


class SequenceBatch:
    """Up to `slots` sequences, each addressed by the id its caller chose.

    `prefill_chunk` tokens per prefill call (None: PREFILL_CHUNK) bound the activation memory;
    `prefill_budget` tokens of deferred prefill at most run between two decode steps (None: a chunk).
    """

    def __init__(self, session: DecoderSession, slots: int, capacity: int, max_capacity: int | None = None,
                 prefix_cache: PrefixCache | None = None, prefill_chunk: int | None = None,
                 prefill_budget: int | None = None):
        self.session = session
        self._chunk = check_tokens_option("prefill_chunk", prefill_chunk)
        self._budget = check_tokens_option("prefill_budget", prefill_budget)
        self.steps = 0  # decode steps so far: deferred prefills run between them (pending.py)
        self._prefix = prefix_cache if prefix_cache is not None and prefix_cache.enabled else None
        self._side: SequenceBatch | None = None  # the one-row batch aside, during an admit
        self._side_capacity = 0  # the admit's longest prompt: the side batch never grows
        max_capacity = max_capacity or session.manifest.context_length
        self._cache = StateCache(session.dims, slots, min(capacity, max_capacity), max_capacity,
                                 session.manifest.kv_dtype)
        self._bindings: dict[tuple, object] = {}
        self._all_logits = session.manifest.all_logits
        self._order: list[Hashable] = []  # sequence ids by row
        self._rows: dict[Hashable, int] = {}
        self._stats = BatchStats()

    @property
    def slots(self) -> int:
        return self._cache.slots

    @property
    def prefill_chunk(self) -> int:
        return self._chunk or PREFILL_CHUNK  # read at call time: tests shrink the module's default

    @property
    def prefill_budget(self) -> int:
        return self._budget or self.prefill_chunk

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, seq_id: Hashable) -> bool:
        return seq_id in self._rows

    # ---- sequences in and out -------------------------------------------------------------
    def admit(self, prompts: Mapping[Hashable, Sequence[int] | Prefilled]) -> dict[Hashable, np.ndarray]:
        """New sequences into free slots; returns each one's next-token logits.

        A prompt the prefix cache holds a prefix of continues from it aside (or is restored whole);
        the others, into an empty batch, are prefilled together (left-padded, one call per chunk),
        into a batch with live sequences each aside, and moved in. Computed prompts are cached.
        """
        self._check_free(prompts)
        if not self._order:
            self._cache.reset()
        t0 = time.perf_counter()
        fresh = {s: list(p) for s, p in prompts.items() if not isinstance(p, Prefilled)}
        if not all(fresh.values()):
            raise RequestError("empty prompt: admit needs at least one token per sequence")
        self._side_capacity = max(map(len, fresh.values()), default=0)
        try:
            starts = self._starts(fresh)
            out = self._admit_fresh({s: p for s, p in fresh.items() if s not in starts})
            for s, start in starts.items():
                out[s] = self._admit_aside(s, fresh[s], start)
        finally:
            self._side = None  # its buffers are one long row: not kept between admits
        if fresh:
            self._stats.prefill_seconds += time.perf_counter() - t0
        for s, p in prompts.items():
            if isinstance(p, Prefilled):
                self._cache.restore(p.state, len(self._order))
                self._place(s)
                out[s] = p.logits
        return {s: out[s] for s in prompts}

    def fork(self, src: Hashable, dst: Hashable) -> None:
        """`dst` becomes an exact copy of `src` (identical prompts are prefilled once)."""
        self._check_free([dst])
        self._cache.copy_row(self._rows[src], len(self._order))
        self._place(dst)

    def save(self, seq_id: Hashable, logits: np.ndarray) -> Prefilled:
        """A copy of a sequence's state with the logits it ended on, to admit again later."""
        return Prefilled(self._cache.snapshot(self._rows[seq_id]), logits.copy())

    def retire(self, seq_id: Hashable) -> None:
        """Free a sequence's slot: the last row's sequence moves in, so rows stay a prefix."""
        row = self._rows.pop(seq_id)
        last = len(self._order) - 1
        moved = self._order.pop()
        if row != last:
            self._cache.copy_row(last, row)
            self._order[row] = moved
            self._rows[moved] = row
        self._cache.clear_row(last)

    def reset(self) -> None:
        """Drop every sequence (the buffers stay allocated)."""
        self._order.clear()
        self._rows.clear()
        self._cache.reset()

    def take_stats(self) -> BatchStats:
        """The figures so far, then start counting afresh (a chat reports each turn)."""
        stats, self._stats = self._stats, BatchStats()
        stats.cache_bytes = self._cache.nbytes
        return stats

    def _check_free(self, seq_ids) -> None:
        taken = [s for s in seq_ids if s in self._rows]
        if taken:
            raise ValueError(f"sequence {taken[0]!r} is already in the batch")
        if len(self._order) + len(seq_ids) > self.slots:
            raise ValueError(f"{len(seq_ids)} more sequences do not fit: {len(self._order)} of {self.slots} slots taken")

    def _place(self, seq_id: Hashable) -> None:
        self._rows[seq_id] = len(self._order)
        self._order.append(seq_id)

    def _admit_fresh(self, fresh: dict[Hashable, list[int]]) -> dict[Hashable, np.ndarray]:
        """Prompts without a cached prefix: together into an empty batch, else each aside."""
        # onnxruntime's CPU GroupQueryAttention takes several tokens over a past only for
        # batch 1: several prompts longer than a chunk are prefilled aside one by one
        if not fresh or self._order or (len(fresh) > 1 and max(map(len, fresh.values())) > self.prefill_chunk):
            return {s: self._admit_aside(s, p, None) for s, p in fresh.items()}
        out = dict(zip(fresh, self._prefill(list(fresh.values()))))
        for s, p in fresh.items():
            self._place(s)
            if self._prefix is not None and self._prefix.fits(self._entry_nbytes(len(p))):
                self._prefix.put(p, self.save(s, out[s]))
        return out

    def _admit_aside(self, seq_id: Hashable, prompt: list[int], start: tuple[int, Prefilled] | None) -> np.ndarray:
        """One prompt computed aside (from `start`, a cached prefix of it, if given), cached, and moved in."""
        if start is not None and start[0] == len(prompt):  # all of it is cached
            done = start[1]
        else:
            done = self._compute(prompt, start)
            if self._prefix is not None:
                self._prefix.put(prompt, done)
        self._cache.restore(done.state, len(self._order))
        self._place(seq_id)
        return done.logits.copy()  # the cache's copy stays as it was

    # ---- the prefix cache -----------------------------------------------------------------
    def _starts(self, fresh: dict[Hashable, list[int]]) -> dict[Hashable, tuple[int, Prefilled]]:
        """Each prompt's longest cached prefix; the heads prompts share are computed and cached first."""
        if self._prefix is None:
            return {}
        for head in shared_heads(list(fresh.values()), MIN_REUSE):
            if head not in self._prefix and self._prefix.fits(self._entry_nbytes(len(head))):
                self._prefix.put(head, self._compute(head, self._lookup(head)))
        starts = {s: self._lookup(p) for s, p in fresh.items()}
        return {s: hit for s, hit in starts.items() if hit is not None}

    def _lookup(self, tokens: Sequence[int]) -> tuple[int, Prefilled] | None:
        """The longest cached prefix worth starting from (any, if it is all of `tokens`), counted."""
        hit = self._prefix.longest(tokens, min(MIN_REUSE, len(tokens)))
        if hit is not None:
            self._stats.prefix_hits += 1
            self._stats.prefix_tokens_reused += hit[0]
        return hit

    def _compute(self, tokens: Sequence[int], start: tuple[int, Prefilled] | None) -> Prefilled:
        """`tokens`' state and logits from a one-row batch aside, continuing `start` if given."""
        if self._side is None:
            self._side = self.side_batch(max(len(tokens), self._side_capacity))
        side = self._side
        side.reset()
        if start is None:
            logits = side.admit({0: list(tokens)})[0]
        else:
            side.admit({0: start[1]})
            logits = side.extend(0, list(tokens[start[0] :]))
        done = side.save(0, logits)
        self._stats.add_work(side.take_stats())
        return done

    def _entry_nbytes(self, tokens: int) -> int:
        """A prefix cache entry's size before it is taken: the row's snapshot and its float32 logits."""
        return self._cache.snapshot_nbytes(tokens) + self._cache.dims.vocab_size * np.float32().itemsize

    # ---- prefills deferred (pending.py runs them; these are what a PendingPrefill asks of its batch) ----
    def defer(self, prompts: Sequence[Sequence[int]]) -> list[PendingPrefill]:
        """Each prompt as a prefill aside to run a piece at a time while the live rows decode; it
        stops at the heads the prompts share (as `admit` computes them first) to cache them."""
        heads: list[tuple[int, ...]] = []
        if self._prefix is not None:
            heads = [h for h in shared_heads(prompts, MIN_REUSE)
                     if h not in self._prefix and self._prefix.fits(self._entry_nbytes(len(h)))]
        return [PendingPrefill(self, p, [len(h) for h in heads if tuple(p[: len(h)]) == h]) for p in prompts]

    def side_batch(self, capacity: int) -> "SequenceBatch":
        """A one-row batch aside for a prompt of `capacity` tokens (its own cache, this batch's chunk)."""
        return SequenceBatch(self.session, 1, capacity=capacity, max_capacity=self._cache.max_capacity,
                             prefill_chunk=self._chunk)

    def lookup_prefix(self, tokens: Sequence[int]) -> tuple[int, Prefilled] | None:
        return self._lookup(tokens) if self._prefix is not None else None

    def store_prefix(self, tokens: Sequence[int], done: Prefilled) -> None:
        if self._prefix is not None:
            self._prefix.put(tokens, done)

    def add_work(self, side: BatchStats) -> None:
        """A deferred prefill's piece, counted (with its time) as this batch's prefill work."""
        self._stats.add_work(side, seconds=True)

    # ---- model calls ----------------------------------------------------------------------
    def extend(self, seq_id: Hashable, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens to a live sequence; returns its logits [vocab]."""
        if not len(tokens):
            raise RequestError("nothing to append: extend needs at least one token")
        t0 = time.perf_counter()
        row = self._rows[seq_id]
        ids = np.asarray([tokens], np.int64)
        chunk_len = self.prefill_chunk
        for c in range(0, ids.shape[1], chunk_len):
            chunk = ids[:, c : c + chunk_len]
            logits = self._forward(row, chunk, np.ones_like(chunk))
        self._stats.prefill_tokens += len(tokens)
        self._stats.prefill_seconds += time.perf_counter() - t0
        return logits[0]

    def step(self, tokens: Mapping[Hashable, int]) -> dict[Hashable, np.ndarray]:
        """One new token for every live sequence: the hot path, one session call for all."""
        order = self._order
        if len(tokens) != len(order):
            raise ValueError(f"a step needs one token for each of the {len(order)} live sequences, got {len(tokens)}")
        ids = np.fromiter(map(tokens.__getitem__, order), np.int64, len(order)).reshape(len(order), 1)
        self.steps += 1
        return dict(zip(order, self._forward(0, ids, np.ones_like(ids))))

    def _prefill(self, prompts: list[list[int]]) -> np.ndarray:
        """Rows [0, n) of an empty batch, left-padded, in chunks. Returns logits [n, vocab]."""
        n, width = len(prompts), max(map(len, prompts))
        ids = np.zeros((n, width), np.int64)
        mask = np.zeros((n, width), np.int64)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = p
            mask[r, width - len(p) :] = 1
        chunk = self.prefill_chunk
        for c in range(0, width, chunk):
            logits = self._forward(0, ids[:, c : c + chunk], mask[:, c : c + chunk])
        self._stats.prefill_tokens += sum(map(len, prompts))
        return logits

    def _forward(self, start: int, ids: np.ndarray, new_mask: np.ndarray) -> np.ndarray:
        """Run rows [start, start+n) on `ids` [n, S]; returns last-position logits [n, vocab]."""
        n, s = ids.shape
        cache = self._cache
        cache.reserve(s)
        b = self._state_binding(start, start + n)
        mask = cache.mask_for(start, start + n, s)
        mask[:, cache.columns :] = new_mask
        bind(b, A.ATTENTION_MASK, mask)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        bind(b, A.INPUT_IDS, ids)
        logits = np.empty((n, s if self._all_logits else 1, cache.dims.vocab_size), np.float32)
        bind(b, A.LOGITS, logits, output=True)
        self.session.run(b)
        self._stats.calls += 1
        cache.commit(start, start + n, new_mask, live=len(self._order))
        return logits[:, -1]

    def _state_binding(self, start: int, stop: int):
        """An IOBinding with the state of rows [start, stop) bound, reused across steps.

        Binding 4 x layers buffers costs a few milliseconds of Python per call at 40 layers;
        the buffers only move when the cache grows, so one binding per (rows, phase) lasts.
        """
        cache = self._cache
        key = (start, stop, cache.phase, cache.capacity)
        if key not in self._bindings:
            if len(self._bindings) >= 4 or any(k[3] != cache.capacity for k in self._bindings):
                self._bindings.clear()
            binding = self.session.io_binding()
            cache.bind_state(binding, start, stop)
            self._bindings[key] = binding
        return self._bindings[key]
