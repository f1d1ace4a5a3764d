"""Continuous batching: one SequenceBatch on one thread; requests join and leave between steps.

    any thread                                   the scheduler thread (the only one running the model)
    ──────────                                   ─────────────────────────────────────────────────────
    submit(requests, sink) ─► inbox ─┐           ┌─► decode_loop(batch, live, refill) ◄───────────────┐
      (QueueFull past max_queue)     │           │     sample every live sequence (SequenceState.step) │
    job.cancel() ─ a flag ───────────┤           │     └─ Deltas buffered per job                      │
                                     └─ refill ◄─┘     refill, between steps:                          │
                                                          flush: sink(deltas), one call per job        │
                                                          drop cancelled (live ones leave the batch)   │
                                                          retire finished, drain the inbox, admit into │
                                                          free slots (Admission: identical prompts     │
                                                          prefilled once, kept, copied in; a prompt    │
                                                          into a busy batch a piece per step)          │
                                                        batch.step(all live): one model call ──────────┘
                                                   idle (nothing live or waiting): wait on the inbox

The sink runs on the scheduler thread and must not block (an HTTP layer hands the deltas to its
event loop, `generate_batch` to a queue). The scheduler is itself a `BatchGenerator`, so Markovian
RSA's rollouts share the batch with every other request.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import queue
import threading
import time
from typing import Callable, Sequence, Union

import numpy as np

from zaya_edge.errors import RequestError, ZayaEdgeError

from .batch import SequenceBatch
from .admission import Admission
from .engine import Engine
from .generation import GenerationStats, decode_loop
from .sequence import SequenceState, StepEvent
from .types import BatchProgress, Completion, Request

RATE_WINDOW_S = 10.0  # tokens/s is measured over this much recent time


class QueueFull(ZayaEdgeError):
    """More sequences wait for a slot than the scheduler was told to hold: try again later."""


@dataclasses.dataclass(frozen=True)
class TokenLogprobs:
    """The chosen token's log-probability under the model (raw logits) and the `k` most likely."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def token_logprobs(logits: np.ndarray, token: int, k: int) -> TokenLogprobs:
    z = logits.astype(np.float64)
    m = float(z.max())
    lse = m + float(np.log(np.exp(z - m).sum()))
    best = np.argpartition(-z, k - 1)[:k] if 0 < k < z.size else np.arange(z.size if k else 0)
    best = best[np.argsort(-z[best], kind="stable")]
    return TokenLogprobs(token, float(z[token]) - lse, tuple((int(i), float(z[i]) - lse) for i in best))


@dataclasses.dataclass
class Delta:
    """What one sequence of a job did in one step."""

    choice: int  # the request's position in its job
    token: int  # -1 when cancelled
    text: str
    finish_reason: str | None
    logprobs: TokenLogprobs | None = None
    completion: Completion | None = None  # on a choice's last delta


Sink = Callable[[Union[list[Delta], BaseException]], None]


class Job:
    """One submission: its requests, where their deltas go, and whether anyone still wants them."""

    def __init__(self, requests: Sequence[Request], sink: Sink, top_logprobs: int | None):
        self.requests = list(requests)
        self.sink = sink
        self.top_logprobs = top_logprobs  # None: no logprobs
        self.cancelled = False
        self.open = True  # the sink still takes deltas
        self.remaining = len(self.requests)  # sequences not finished yet
        self.buffer: list[Delta] = []

    def cancel(self) -> None:
        """From any thread: its sequences leave at the next step (a waiting one never starts)."""
        self.cancelled = True

    def flush(self) -> None:
        if self.buffer and self.open:
            out, self.buffer = self.buffer, []
            try:
                self.sink(out)
            except Exception:  # a sink that cannot take deltas any more: nobody is listening
                self.open, self.cancelled = False, True

    def fail(self, exc: BaseException) -> None:
        if self.open:
            self.open, self.cancelled = False, True
            try:
                self.sink(exc)
            except Exception:
                pass


class _Seq(SequenceState):
    """A job's sequence: every step (and a cancellation) also becomes a Delta in the job's buffer."""

    def __init__(self, index: int, job: Job, choice: int, engine: Engine):
        super().__init__(index, job.requests[choice], engine.eos_token_ids, engine.tokenizer)
        self.job, self.choice = job, choice

    def step(self) -> StepEvent:
        logits, k = self.logits, self.job.top_logprobs
        event = super().step()
        lp = token_logprobs(logits, event.token, k) if k is not None else None
        self._record(event, lp)
        return event

    def cancel(self) -> StepEvent:
        event = super().cancel()
        self._record(event, None)
        return event

    def _record(self, event: StepEvent, lp: TokenLogprobs | None) -> None:
        done = self.completion() if event.finish_reason else None
        self.job.remaining -= done is not None
        self.job.buffer.append(Delta(self.choice, event.token, event.text, event.finish_reason, lp, done))


class _Inflow(Admission):
    """The engine's admission policy fed continuously: sequences join `pending` as requests arrive."""

    def __init__(self, batch: SequenceBatch):
        super().__init__(batch, [])

    def add(self, seqs: Sequence[_Seq]) -> None:
        self.pending.extend(seqs)
        self.waiting.update(s.request.prompt_ids for s in seqs)

    def drop_cancelled(self) -> list[_Seq]:
        """Take out waiting and prefilling sequences whose job was cancelled."""
        gone = [s for s in self.pending if s.job.cancelled]
        if gone:
            self.pending = collections.deque(s for s in self.pending if not s.job.cancelled)
            self.waiting.subtract(s.request.prompt_ids for s in gone)
            for prompt in {s.request.prompt_ids for s in gone}:
                if self.waiting[prompt] <= 0:  # a long-lived server sees many prompts: forget these
                    self.waiting.pop(prompt, None)
                    self.kept.pop(prompt, None)
        for prompt, group in list(self.prefilling.items()):
            gone += [s for s in group if s.job.cancelled]
            group[:] = [s for s in group if not s.job.cancelled]
            if not group:  # nobody wants this prompt any more: its prefill stops
                del self.prefilling[prompt]
                self.prefills.drop(prompt)
        return gone

    def abandon(self) -> list[_Seq]:
        """Shutting down: every sequence not yet live, taken out."""
        out = list(self.pending) + [s for group in self.prefilling.values() for s in group]
        for prompt in self.prefilling:
            self.prefills.drop(prompt)
        self.pending.clear()
        self.prefilling.clear()
        return out

    def refill(self, finished, live) -> list[_Seq]:
        """Retire and admit (the engine's policy); returns the sequences that went live."""
        before = set(live)
        super().refill(finished, live)
        return [s for i, s in live.items() if i not in before]


@dataclasses.dataclass(frozen=True)
class SchedulerMetrics:
    queue_length: int  # sequences waiting for a slot
    live_sequences: int
    slots: int
    tokens_per_s: float  # generated, over the last RATE_WINDOW_S
    generated_tokens: int  # totals since the start
    prompt_tokens: int  # of admitted sequences
    prefill_tokens: int  # actually computed: identical prompts share one prefill, cached prefixes none
    model_calls: int
    cancelled: int
    cache_bytes: int
    running: bool  # the scheduler thread is alive
    prefix_hits: int = 0  # prompts (and shared heads) started from the prefix cache
    prefix_tokens_reused: int = 0  # prompt tokens restored from it instead of computed
    prefix_cache_bytes: int = 0  # what the engine's prefix cache holds now


class Scheduler:
    """Continuous batching over an Engine's session; a BatchGenerator too (RSA drives it)."""

    def __init__(self, engine: Engine, max_batch: int = 16, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.engine = engine
        self.max_queue = max_queue
        self.batch = engine.new_batch(max_batch, min(256, engine.context_length))
        self._inflow = _Inflow(self.batch)
        self._live: dict[int, _Seq] = {}
        self._jobs: dict[int, Job] = {}  # taken from the inbox and not finished
        self._inbox: collections.deque[Job] = collections.deque()
        self._queued = 0  # sequences in the inbox and in pending
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._ids = itertools.count()
        self._totals = collections.Counter()
        self._rate: collections.deque[tuple[float, int]] = collections.deque([(time.monotonic(), 0)])
        self._thread = threading.Thread(target=self._serve, name="zaya-edge-scheduler", daemon=True)

    # ---- the BatchGenerator face ------------------------------------------------------------
    @property
    def codec(self):
        return self.engine.codec

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    @property
    def model_id(self):
        return getattr(self.engine, "model_id", None)

    def cache_bytes_per_sequence(self, length: int) -> int:
        return self.engine.cache_bytes_per_sequence(length)

    def generate_batch(self, requests: Sequence[Request], on_progress=None) -> list[Completion]:
        """Block until all requests finish, sharing the batch with everyone else (not bounded by max_queue)."""
        inbox: queue.Queue = queue.Queue()
        job = self.submit(requests, inbox.put, bounded=False)
        out: list[Completion | None] = [None] * len(job.requests)
        finished = generated = 0
        start = time.perf_counter()
        while finished < len(out):
            item = self._wait(inbox)
            if isinstance(item, BaseException):
                raise item
            for d in item:
                generated += d.token >= 0
                if d.completion is not None:
                    out[d.choice], finished = d.completion, finished + 1
            progress = BatchProgress(len(out) - finished, finished, generated, time.perf_counter() - start)
            if on_progress is not None and on_progress(progress) is False:
                job.cancel()
        return out

    def _wait(self, inbox: queue.Queue):
        while True:
            try:
                return inbox.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise ZayaEdgeError("the scheduler has stopped") from None

    # ---- any thread ---------------------------------------------------------------------------
    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything (each job hears "cancelled"), then stop the thread."""
        self._closing.set()
        with self._cond:
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, requests: Sequence[Request], sink: Sink, *, top_logprobs: int | None = None,
               bounded: bool = True) -> Job:
        """Queue a job; its deltas go to `sink` on the scheduler thread. Checked here, in the caller's thread."""
        if not requests:
            raise ValueError("a job needs at least one request")
        for r in requests:
            self.engine.check(r)
        job = Job(requests, sink, top_logprobs)
        if bounded and len(job.requests) > self.max_queue:
            raise RequestError(f"{len(job.requests)} sequences at once can never wait in a queue of {self.max_queue}")
        with self._cond:
            if self._closing.is_set():
                raise QueueFull("the server is shutting down")
            if bounded and self._queued + len(job.requests) > self.max_queue:
                raise QueueFull(f"{self._queued} sequences already wait for a slot (at most {self.max_queue})")
            self._inbox.append(job)
            self._queued += len(job.requests)
            self._cond.notify()
        return job

    def metrics(self) -> SchedulerMetrics:
        t = self._totals
        now = time.monotonic()
        with self._cond:
            samples = list(self._rate)
            queued, live = self._queued, len(self._live)
        # from the newest sample at least a window old (the oldest while the server is young)
        then, before = next((x for x in reversed(samples) if now - x[0] >= RATE_WINDOW_S), samples[0])
        tokens_per_s = (t["generated"] - before) / max(now - then, 1e-3)
        return SchedulerMetrics(queued, live, self.batch.slots, tokens_per_s, t["generated"], t["prompt"],
                                t["prefill"], t["calls"], t["cancelled"], t["cache_bytes"], self._thread.is_alive(),
                                t["prefix_hits"], t["prefix_reused"], self.engine.prefix_cache.nbytes)

    # ---- the scheduler thread -----------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._inbox or self._inflow.pending or self._closing.is_set()):
                    self._cond.wait()
            if self._closing.is_set():
                break
            try:
                self._busy()
            except Exception as exc:  # a failed model call must not take the server down
                self._fail_active(exc)
        self._cancel_waiting()

    def _busy(self) -> None:
        """One busy period: from the first admission until nothing is live."""
        self._live = {}
        self._refill([], self._live)
        stats = GenerationStats()
        for events in decode_loop(self.batch, self._live, self._closing.is_set, stats, time.perf_counter(), self._refill):
            self._totals["generated"] += sum(e.token >= 0 for e in events)
        self._flush()

    def _refill(self, finished: list[int], live: dict[int, _Seq]) -> bool:
        """Between steps: drop the cancelled, take in new jobs, retire the finished, admit (a long
        prompt a piece per step), hand out deltas. True while prompts are being prefilled."""
        gone = [i for i, s in live.items() if s.job.cancelled]
        for i in gone:
            live.pop(i).cancel()
        self._take_inbox()
        dropped = self._inflow.drop_cancelled()
        for s in dropped:
            s.cancel()
        admitted = self._inflow.refill(finished + gone, live)
        self._totals["prompt"] += sum(len(s.request.prompt_ids) for s in admitted)
        self._totals["cancelled"] += len(gone) + len(dropped)
        with self._cond:
            self._queued = sum(len(j.requests) for j in self._inbox) + len(self._inflow.pending)
        self._flush()
        return bool(self._inflow.prefilling)

    def _flush(self) -> None:
        """Hand every job its buffered deltas (one sink call per job per step); forget finished jobs."""
        for key, job in list(self._jobs.items()):
            job.flush()
            if job.remaining <= 0 or not job.open:
                del self._jobs[key]
        s = self.batch.take_stats()
        self._totals.update(prefill=s.prefill_tokens, calls=s.calls, prefix_hits=s.prefix_hits,
                            prefix_reused=s.prefix_tokens_reused)
        self._totals["cache_bytes"] = s.cache_bytes
        now = time.monotonic()
        with self._cond:
            self._rate.append((now, self._totals["generated"]))
            while len(self._rate) > 2 and now - self._rate[1][0] > RATE_WINDOW_S:
                self._rate.popleft()

    def _fail_active(self, exc: Exception) -> None:
        """A model call failed: every started job hears it and the batch starts empty; the inbox goes on."""
        for job in self._jobs.values():
            job.fail(exc)
        self._jobs, self._live = {}, {}
        self.batch.reset()
        self._inflow = _Inflow(self.batch)
        with self._cond:
            self._queued = sum(len(j.requests) for j in self._inbox)

    def _cancel_waiting(self) -> None:
        """Shutting down: jobs that never started hear "cancelled" too."""
        self._take_inbox()
        for s in self._inflow.abandon():
            s.cancel()
        self._queued = 0
        self._flush()

    def _take_inbox(self) -> None:
        """New jobs become sequences waiting for a slot."""
        with self._cond:
            arrived = list(self._inbox)
            self._inbox.clear()
        for job in arrived:
            self._jobs[id(job)] = job
            self._inflow.add([_Seq(next(self._ids), job, c, self.engine) for c in range(len(job.requests))])
