"""Who enters a batch when: the engine's admission policy (the server's scheduler feeds it too).

    start()                the first `slots` sequences at once: an empty batch, prefilled together
    refill(finished, live) between decode steps: retire the finished; waiting sequences take the
                           free slots: at once when nothing is live (the fast path) or their prompt
                           is kept; else their prompt is deferred (pending.py) and prefilled a
                           piece per decode step, then moved in; True while some are on their way
"""

from __future__ import annotations

import collections

from .batch import SequenceBatch
from .pending import PrefillQueue
from .prefix_cache import Prefilled
from .sequence import SequenceState

Prompt = tuple[int, ...]


class Admission:
    """Sequences entering together are grouped by prompt: each distinct prompt is prefilled once
    (and the heads they share once), then forked. A prompt that a waiting sequence shares is kept
    prefilled (`Prefilled`), so it is computed only once; a sequence whose prompt is on its way in
    joins that group."""

    def __init__(self, batch: SequenceBatch, seqs: list[SequenceState]):
        self.batch = batch
        self.first = seqs[: batch.slots]
        self.pending = collections.deque(seqs[batch.slots :])  # waiting for a slot
        self.waiting = collections.Counter(s.request.prompt_ids for s in self.pending)
        self.kept: dict[Prompt, Prefilled] = {}
        self.prefills = PrefillQueue()  # deferred prompts, by prompt
        self.prefilling: dict[Prompt, list[SequenceState]] = {}  # their groups: each holds a slot per sequence

    def start(self) -> dict[int, SequenceState]:
        """Admit the first sequences; returns them by batch id, holding their first logits."""
        live: dict[int, SequenceState] = {}
        self._admit(self.first, live)
        return live

    def refill(self, finished: list[int], live: dict[int, SequenceState]) -> bool:
        """Retire the finished, admit waiting ones into the free slots, run the next prefill pieces.
        True while sequences are still being prefilled (the decode loop goes on for them)."""
        for i in finished:
            self.batch.retire(i)
        held = sum(map(len, self.prefilling.values()))
        free = min(self.batch.slots - len(self.batch) - held, len(self.pending))
        seqs = [self.pending.popleft() for _ in range(free)]
        self.waiting.subtract(s.request.prompt_ids for s in seqs)
        self._admit(seqs, live)
        for prompt, done in self.prefills.advance(self.batch):
            group = self.prefilling.pop(prompt)
            self._enter(prompt, group, self.batch.admit({group[0].index: done})[group[0].index], live)
        return bool(self.prefilling)

    def _admit(self, seqs: list[SequenceState], live: dict[int, SequenceState]) -> None:
        """`seqs` into the batch, each group in one admit; into a batch with live rows, computed
        prompts are deferred instead."""
        groups: dict[Prompt, list[SequenceState]] = {}
        for s in seqs:
            prompt = s.request.prompt_ids
            (self.prefilling[prompt] if prompt in self.prefilling else groups.setdefault(prompt, [])).append(s)
        defer = [p for p in groups if len(self.batch) and p not in self.kept]
        for prompt, pending in zip(defer, self.batch.defer(defer)):
            self.prefills.add(prompt, pending)
            self.prefilling[prompt] = groups.pop(prompt)
        if not groups:
            return
        logits = self.batch.admit({group[0].index: self.kept.get(prompt, prompt) for prompt, group in groups.items()})
        for prompt, group in groups.items():
            self._enter(prompt, group, logits[group[0].index], live)

    def _enter(self, prompt: Prompt, group: list[SequenceState], logits, live: dict[int, SequenceState]) -> None:
        """A group whose first sequence is in the batch: fork the others, all hold `logits`, all live."""
        head, *rest = group
        for s in rest:
            self.batch.fork(head.index, s.index)
        for s in group:
            s.logits = logits
            live[s.index] = s
        self._keep(head, prompt)

    def _keep(self, seq: SequenceState, prompt: Prompt) -> None:
        """Keep the prompt's prefilled state while a waiting sequence still needs it."""
        if self.waiting[prompt] <= 0:  # nobody waits for it any more: forget the prompt
            self.waiting.pop(prompt, None)
            self.kept.pop(prompt, None)
        elif prompt not in self.kept:
            self.kept[prompt] = self.batch.save(seq.index, seq.logits)
