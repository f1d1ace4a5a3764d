"""Prompts prefilled a piece at a time between the decode steps of a batch's live rows.

    admission ─ batch.defer(prompts) ─> PendingPrefill (a one-row batch aside, the tokens left)
    each decode-loop iteration: PrefillQueue.advance(batch)
        after the live rows stepped: pieces of the oldest prompts, prefill_budget tokens at most
        ─> [(key, Prefilled)] of the prompts done ─> batch.admit (restored, right-aligned)

A 16K-token prompt admitted into a running batch used to stall every live row for its whole
prefill; now the rows step between its chunks. The pieces are the calls a prefill aside at once
makes (chunks from the prompt's longest cached prefix, ending at the heads it shares with the
prompts deferred with it, which are cached there), so the state and logits are the same; only
when they are computed changes. One prompt is in progress at a time, so one row aside is held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Sequence

from .prefix_cache import Prefilled

if TYPE_CHECKING:
    from .batch import SequenceBatch


class PendingPrefill:
    """One prompt on its way into `owner`: computed aside, at most a chunk per call."""

    def __init__(self, owner: "SequenceBatch", tokens: Sequence[int], stops: Sequence[int] = ()):
        self.owner = owner
        self.tokens = list(tokens)
        # where a piece must end: the shared heads to cache, and the prompt's end
        self._stops = sorted({n for n in stops if 0 < n < len(self.tokens)} | {len(self.tokens)})
        self._pos: int | None = None  # tokens the row aside holds; None before the first piece
        self._side: SequenceBatch | None = None
        self._logits = None
        self.result: Prefilled | None = None  # the prompt's state and logits, once done

    @property
    def done(self) -> bool:
        return self.result is not None

    def next_piece(self) -> int:
        """Tokens the next call computes (before the first, at most that: a cached prefix may shorten it)."""
        pos = self._pos or 0
        stop = next(s for s in self._stops if s > pos)
        return min(stop - pos, self.owner.prefill_chunk)

    def advance(self) -> int:
        """Compute the next piece; returns its tokens (0 when the prefix cache held the whole prompt)."""
        if self._pos is None and self._begin():
            return 0
        n = self.next_piece()
        piece = self.tokens[self._pos : self._pos + n]
        side = self._side
        self._logits = side.extend(0, piece) if 0 in side else side.admit({0: piece})[0]
        self._pos += n
        self.owner.add_work(side.take_stats())
        if self._pos in self._stops:
            self._reached(self._pos)
        return n

    def _begin(self) -> bool:
        """Start from the longest cached prefix; True when it is the whole prompt (nothing to compute)."""
        hit = self.owner.lookup_prefix(self.tokens)
        if hit is not None and hit[0] == len(self.tokens):
            self.result = Prefilled(hit[1].state, hit[1].logits.copy())  # the cache's copy stays as it was
            return True
        self._side = self.owner.side_batch(len(self.tokens))
        self._pos = 0
        if hit is not None:
            self._side.admit({0: hit[1]})
            self._pos = hit[0]
        return False

    def _reached(self, stop: int) -> None:
        """At a shared head or the prompt's end: cache the state there; at the end, done."""
        snapshot = self._side.save(0, self._logits)
        self.owner.store_prefix(self.tokens[:stop], snapshot)
        if stop == len(self.tokens):
            self.result = snapshot
            self._side = self._logits = None  # the row aside goes now, not when the sequence does


class PrefillQueue:
    """Pending prefills by key (a caller's name for each), run oldest first between decode steps."""

    def __init__(self):
        self._items: dict[Hashable, PendingPrefill] = {}
        self._steps_seen = -1  # the batch's decode steps at the last advance

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def add(self, key: Hashable, pending: PendingPrefill) -> None:
        self._items[key] = pending

    def drop(self, key: Hashable) -> None:
        """Nobody waits for this prompt any more: forget it (and the row aside it holds)."""
        self._items.pop(key, None)

    def advance(self, batch: "SequenceBatch") -> list[tuple[Hashable, Prefilled]]:
        """Pieces of the oldest prompts, batch.prefill_budget tokens at most (one piece at least);
        returns the prompts done. While the batch has live rows it runs once per decode step, so
        no more than the budget ever runs between two steps of theirs."""
        if not self._items or (len(batch) and batch.steps == self._steps_seen):
            return []
        self._steps_seen = batch.steps
        spent, done = 0, []
        for key, pending in list(self._items.items()):
            while not pending.done and (not spent or spent + pending.next_piece() <= batch.prefill_budget):
                spent += pending.advance()
            if not pending.done:
                break  # oldest first: a younger prompt never overtakes
            done.append((key, self._items.pop(key).result))
        return done
