"""Prefilled token prefixes kept for reuse: a head several prompts share is computed once, a
repeated prompt not at all.

An entry is the exact state after its tokens (a RowState: KV columns, CCA conv and delayed-value
state) and the logits there, so continuing from it equals prefilling the whole prompt. The state
after a shorter prefix cannot be cut out of an entry (conv and delayed-value states are not kept
per position), so entries are whole prefixes: prompts, and the heads that prompts share.

Keys chain a hash over blocks of BLOCK tokens: finding every cached prefix of a prompt costs one
pass over the prompt and BLOCK tokens per cached length, and a hit is checked token by token.
Bounded in bytes, least recently used first out; 0 bytes turns the cache off.
"""

from __future__ import annotations

import collections
import dataclasses
import numbers
import threading
from typing import Sequence

import numpy as np

from zaya_edge.errors import RequestError

from .cache import RowState

BLOCK = 64  # tokens per hashed block of a key
DEFAULT_BYTES = 512 * 2**20  # holds a long shared head (problem + template) of the full model
MIN_REUSE = 32  # a shorter prefix (of a longer prompt) is not worth leaving the batched prefill for


@dataclasses.dataclass(frozen=True)
class Prefilled:
    """A prefilled prompt kept aside: admitting it again costs a copy, not a prefill."""

    state: RowState
    logits: np.ndarray

    @property
    def nbytes(self) -> int:
        s = self.state
        return self.logits.nbytes + sum(a.nbytes for a in s.key + s.value + s.conv + s.recurrent)


@dataclasses.dataclass
class PrefixStats:
    """What the cache did since it was made."""

    hits: int = 0  # lookups that found a usable cached prefix
    reused_tokens: int = 0  # tokens restored from entries instead of computed
    stored: int = 0
    evicted: int = 0


@dataclasses.dataclass(frozen=True)
class _Entry:
    tokens: np.ndarray  # int64, for the token-by-token check of a hit
    value: Prefilled
    nbytes: int


def check_bytes(value) -> int:
    """The one rule for a prefix cache size: a whole number of bytes >= 0 (0 = off)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise RequestError(f"prefix_cache must be a byte count >= 0 (0 turns it off), got {value!r}")
    return int(value)


def _ids(tokens: Sequence[int]) -> np.ndarray:
    return np.asarray(tokens, np.int64).reshape(-1)


def _chain(ids: np.ndarray) -> list[int]:
    """hash of ids[: BLOCK * q] for q = 0 .. len // BLOCK, each from the one before."""
    out = [0]
    for q in range(len(ids) // BLOCK):
        out.append(hash((out[-1], ids[q * BLOCK : (q + 1) * BLOCK].tobytes())))
    return out


def _key(ids: np.ndarray, chain: list[int], length: int) -> tuple:
    q = length // BLOCK
    return length, chain[q], ids[q * BLOCK : length].tobytes()


class PrefixCache:
    """Token prefix -> Prefilled, at most `max_bytes` in all. Thread-safe (a server's batch and
    the engine may share one)."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES):
        self.max_bytes = check_bytes(max_bytes)
        self.nbytes = 0
        self.stats = PrefixStats()
        self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()
        self._lengths: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.max_bytes

    def __contains__(self, tokens: Sequence[int]) -> bool:
        """Whether exactly `tokens` is cached (not counted as a hit, not marked used)."""
        ids = _ids(tokens)
        with self._lock:
            entry = self._entries.get(_key(ids, _chain(ids), len(ids)))
        return entry is not None and np.array_equal(entry.tokens, ids)

    def longest(self, tokens: Sequence[int], shortest: int = 1) -> tuple[int, Prefilled] | None:
        """(length, entry) of the longest cached prefix of `tokens` at least `shortest` long, or None.

        Every cached prefix found is marked used, so a shared head outlives the prompts built on it.
        """
        ids = _ids(tokens)
        chain = _chain(ids)
        with self._lock:
            found = []
            for n in sorted(self._lengths):
                if not shortest <= n <= len(ids):
                    continue
                key = _key(ids, chain, n)
                entry = self._entries.get(key)
                if entry is not None and np.array_equal(entry.tokens, ids[:n]):
                    self._entries.move_to_end(key)
                    found.append((n, entry.value))
            if not found:
                return None
            self.stats.hits += 1
            self.stats.reused_tokens += found[-1][0]
            return found[-1]

    def put(self, tokens: Sequence[int], value: Prefilled) -> bool:
        """Keep `value` as the state after `tokens`; False when it alone exceeds the bound."""
        ids = np.array(tokens, np.int64).reshape(-1)  # a copy: the caller's tokens may change
        nbytes = value.nbytes + ids.nbytes
        if not len(ids) or nbytes > self.max_bytes:
            return False
        key = _key(ids, _chain(ids), len(ids))
        with self._lock:
            if key in self._entries:  # (a colliding key keeps the first entry; lookups check tokens)
                self._entries.move_to_end(key)
                return True
            self._entries[key] = _Entry(ids, value, nbytes)
            self._lengths[len(ids)] += 1
            self.nbytes += nbytes
            self.stats.stored += 1
            while self.nbytes > self.max_bytes:
                self._evict()
        return True

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                self._evict()

    def _evict(self) -> None:
        key, entry = self._entries.popitem(last=False)
        self._lengths[key[0]] -= 1
        if not self._lengths[key[0]]:
            del self._lengths[key[0]]
        self.nbytes -= entry.nbytes
        self.stats.evicted += 1


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(_ids(a[:n]) != _ids(b[:n]))
    return int(differ[0]) if len(differ) else n


def shared_heads(prompts: Sequence[Sequence[int]], shortest: int = MIN_REUSE) -> list[tuple[int, ...]]:
    """The prefixes where prompts part ways (a trie's branch points), `shortest` tokens or longer,
    shortest first. Each is the common prefix of two neighbours in sorted order."""
    ordered = sorted({tuple(p) for p in prompts})
    heads = {a[:n] for a, b in zip(ordered, ordered[1:]) if (n := common_length(a, b)) >= shortest}
    return sorted(heads, key=len)
