"""Model calls over a batch of cache rows: prefill, continue, decode, fork, move.

One decode step is one session call for every active row. Rows are addressed as a contiguous
range so their state can be bound in place (see cache.py).
"""

from __future__ import annotations

import time

import numpy as np

from zaya_edge import artifact as A

from .cache import StateCache
from .session import DecoderSession, bind

PREFILL_CHUNK = 512  # tokens per prefill call: bounds activation memory on long prompts


class BatchDecoder:
    def __init__(self, session: DecoderSession, slots: int, capacity: int, max_capacity: int | None = None):
        self.session = session
        self.dims = session.dims
        max_capacity = max_capacity or session.manifest.context_length
        self.cache = StateCache(self.dims, slots, min(capacity, max_capacity), max_capacity)
        self._bindings: dict[tuple, object] = {}
        self.all_logits = session.manifest.all_logits
        self.calls = 0
        self.prefill_tokens = 0
        self.prefill_seconds = 0.0

    @property
    def slots(self) -> int:
        return self.cache.slots

    def _state_binding(self, start: int, stop: int):
        """An IOBinding with the state of rows [start, stop) bound, reused across steps.

        Binding 4 x layers buffers costs a few milliseconds of Python per call at 40 layers;
        the buffers only move when the cache grows, so one binding per (rows, phase) lasts.
        """
        cache = self.cache
        key = (start, stop, cache.phase, cache.capacity)
        if key not in self._bindings:
            if len(self._bindings) >= 4 or any(k[3] != cache.capacity for k in self._bindings):
                self._bindings.clear()
            binding = self.session.io_binding()
            cache.bind_state(binding, start, stop)
            self._bindings[key] = binding
        return self._bindings[key]

    def forward(self, start: int, ids: np.ndarray, new_mask: np.ndarray) -> np.ndarray:
        """Run rows [start, start+n) on `ids` [n, S]; returns last-position logits [n, vocab]."""
        n, s = ids.shape
        cache = self.cache
        cache.reserve(s)
        b = self._state_binding(start, start + n)
        mask = cache.mask_for(start, start + n, s)
        mask[:, cache.columns :] = new_mask
        bind(b, A.ATTENTION_MASK, mask)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        bind(b, A.INPUT_IDS, ids)
        logits = np.empty((n, s if self.all_logits else 1, self.dims.vocab_size), np.float32)
        bind(b, A.LOGITS, logits, output=True)
        self.session.run(b)
        self.calls += 1
        cache.commit(start, start + n, new_mask)
        return logits[:, -1]

    def prefill(self, start: int, prompts: list[list[int]]) -> np.ndarray:
        """Fresh rows [start, start+len(prompts)): left-padded, in chunks. Returns logits [n, vocab].

        Left padding is exact only before a row's first token (its CCA state is still zero).
        """
        t0 = time.perf_counter()
        n = len(prompts)
        width = max(len(p) for p in prompts)
        if n > 1 and width > PREFILL_CHUNK:
            # onnxruntime's CPU GroupQueryAttention takes several tokens over a past only for
            # batch 1: prefill each prompt aside in chunks and move its state into its row.
            rows = []
            for r, p in enumerate(prompts):
                side = BatchDecoder(self.session, 1, capacity=len(p))
                rows.append(side.prefill(0, [p])[0])
                self.calls += side.calls
                self.cache.restore(side.cache.snapshot(0), start + r)
            self.prefill_tokens += sum(len(p) for p in prompts)
            self.prefill_seconds += time.perf_counter() - t0
            return np.stack(rows)
        ids = np.zeros((n, width), np.int64)
        mask = np.zeros((n, width), np.int64)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = p
            mask[r, width - len(p) :] = 1
        for c in range(0, width, PREFILL_CHUNK):
            logits = self.forward(start, ids[:, c : c + PREFILL_CHUNK], mask[:, c : c + PREFILL_CHUNK])
        self.prefill_tokens += sum(len(p) for p in prompts)
        self.prefill_seconds += time.perf_counter() - t0
        return logits

    def extend(self, row: int, tokens: list[int]) -> np.ndarray:
        """Append tokens to one row that already holds a sequence; returns its logits [vocab]."""
        t0 = time.perf_counter()
        ids = np.asarray([tokens], np.int64)
        for c in range(0, ids.shape[1], PREFILL_CHUNK):
            chunk = ids[:, c : c + PREFILL_CHUNK]
            logits = self.forward(row, chunk, np.ones_like(chunk))
        self.prefill_tokens += len(tokens)
        self.prefill_seconds += time.perf_counter() - t0
        return logits[0]

    def decode(self, rows: int, tokens: np.ndarray) -> np.ndarray:
        """One new token for each of rows [0, rows): the hot path, one call for the batch."""
        ids = np.asarray(tokens, np.int64).reshape(rows, 1)
        return self.forward(0, ids, np.ones((rows, 1), np.int64))
