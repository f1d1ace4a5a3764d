"""Chunked prefill interleaved with decode (issue 15): a long prompt admitted while others decode
is prefilled a chunk per step of theirs, not all at once, and every sequence still produces the
tokens it produces alone; the prefill's logits are a one-shot prefill's. The engine's batches, the
server's scheduler and the prefix cache all take that path."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from zaya_edge.errors import RequestError
from zaya_edge.runtime import Engine, Request, SamplingParams, pending as pending_module
from zaya_edge.runtime.batch import SequenceBatch
from zaya_edge.runtime.pending import PrefillQueue
from zaya_edge.runtime.scheduler import Scheduler
from zaya_edge.runtime.session import DecoderSession

CHUNK = 8
TOL = 1e-5  # fp32 artifact: a prefill split differently differs by rounding only


@pytest.fixture(scope="module")
def engine(tiny_artifact):
    return Engine.load(tiny_artifact[1], max_batch=2, prefill_chunk=CHUNK, prefix_cache=0)  # runs alone cache nothing


def _tokens(vocab: int, n: int, seed: int) -> tuple[int, ...]:
    return tuple(int(t) for t in np.random.default_rng(seed).integers(7, vocab, n))


def _params(sampled: bool, new: int, seed: int) -> SamplingParams:
    if sampled:
        return SamplingParams(temperature=1.0, top_k=50, max_new_tokens=new, ignore_eos=True, seed=seed)
    return SamplingParams(temperature=0.0, max_new_tokens=new, ignore_eos=True)


def _spy(monkeypatch) -> list:
    """The order of decode steps ("S") and prefill pieces ("P") every batch runs; `log.sizes`: each piece's tokens."""
    log = _Log()
    step, advance = SequenceBatch.step, pending_module.PendingPrefill.advance

    def piece(self):
        log.append("P")
        log.sizes.append(advance(self))
        return log.sizes[-1]

    monkeypatch.setattr(SequenceBatch, "step", lambda self, tokens: log.append("S") or step(self, tokens))
    monkeypatch.setattr(pending_module.PendingPrefill, "advance", piece)
    return log


class _Log(list):
    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def runs(self) -> list[list[int]]:
        """The piece sizes of each run of pieces between two decode steps."""
        out, sizes = [[]], iter(self.sizes)
        for entry in self:
            if entry == "S":
                out.append([])
            else:
                out[-1].append(next(sizes))
        return [r for r in out if r]


def _most_pieces_between_steps(log: "_Log") -> int:
    return max(map(len, log.runs()))


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "seeded"])
def test_live_rows_keep_stepping_while_a_long_prompt_is_prefilled(engine, monkeypatch, sampled):
    vocab = engine.dims.vocab_size
    requests = [Request(_tokens(vocab, 6, 1), _params(sampled, 60, 1)),  # decodes throughout
                Request(_tokens(vocab, 5, 2), _params(sampled, 3, 2)),  # frees its slot at step 3
                Request(_tokens(vocab, 100, 3), _params(sampled, 8, 3))]  # then arrives into a busy batch
    alone = [engine.generate_batch([r])[0].tokens for r in requests]
    log = _spy(monkeypatch)
    together = engine.generate_batch(requests)
    assert [c.tokens for c in together] == alone
    pieces = -(-100 // CHUNK)
    first, last = log.index("P"), len(log) - 1 - log[::-1].index("P")
    assert log.count("P") == pieces
    # one chunk, then a step of the live row: the long prompt's prefill never stalls it longer
    assert log[first : last + 1].count("S") == pieces - 1 and _most_pieces_between_steps(log) == 1
    assert engine.last_stats.prefill_tokens == 6 + 5 + 100


@pytest.mark.parametrize("budget, most", [(2 * CHUNK, 2), (3 * CHUNK - 1, 3), (10_000, 13)])
def test_the_budget_bounds_the_prefill_run_between_two_steps(tiny_artifact, monkeypatch, budget, most):
    """prefill_budget tokens of chunks at most between two decode steps (10,000: all at once, as
    before). 100 tokens are 12 chunks and a 4-token tail: with 23 tokens the tail joins two chunks."""
    engine = Engine.load(tiny_artifact[1], max_batch=2, prefill_chunk=CHUNK, prefill_budget=budget)
    vocab = engine.dims.vocab_size
    requests = [Request(_tokens(vocab, 6, 1), _params(False, 40, 0)), Request(_tokens(vocab, 5, 2), _params(False, 3, 0)),
                Request(_tokens(vocab, 100, 3), _params(False, 4, 0))]
    log = _spy(monkeypatch)
    got = engine.generate_batch(requests)
    assert _most_pieces_between_steps(log) == most and log.count("P") == 13
    assert max(map(sum, log.runs())) <= budget and sum(log.sizes) == 100
    assert [c.tokens for c in got] == [engine.generate_batch([r])[0].tokens for r in requests]


def test_interleaved_prefill_logits_equal_a_one_shot_prefill(tiny_artifact):
    session = DecoderSession(tiny_artifact[1])
    vocab = session.dims.vocab_size
    short, long = list(_tokens(vocab, 7, 4)), list(_tokens(vocab, 90, 5))
    batch = SequenceBatch(session, 2, capacity=16, prefill_chunk=CHUNK)
    alone = SequenceBatch(session, 1, capacity=128)
    logits = {"live": batch.admit({"live": short})["live"]}
    alone.admit({0: short})
    prefills = PrefillQueue()
    prefills.add("long", batch.defer([long])[0])
    fed, done = [], []
    while not done:
        done = prefills.advance(batch)
        fed.append(int(np.argmax(logits["live"])))
        logits = batch.step({"live": fed[-1]})
        assert np.abs(logits["live"] - alone.step({0: fed[-1]})[0]).max() <= TOL  # the live row is not disturbed
    assert len(fed) == -(-90 // CHUNK)  # a step after every chunk
    one_shot = SequenceBatch(session, 1, capacity=128, prefill_chunk=len(long)).admit({0: long})[0]  # one call
    moved = batch.admit({"long": done[0][1]})["long"]
    assert np.abs(moved - one_shot).max() <= TOL
    # it decodes on from the columns it was restored into (right-aligned, sharing them) as a fresh prefill does
    nxt = batch.step({"live": 11, "long": 12})
    fresh = SequenceBatch(session, 1, capacity=128).admit({0: long + [12]})[0]
    assert np.abs(nxt["long"] - fresh).max() <= TOL
    assert np.abs(nxt["live"] - alone.step({0: 11})[0]).max() <= TOL


def test_prefix_cache_on_and_off_give_the_same_tokens(tiny_artifact, monkeypatch):
    """Prompts sharing a head arrive together into a busy batch: with the cache, the first to run
    stops at the head to cache it and the next starts there; the tokens do not change."""
    vocab = 384
    head = _tokens(vocab, 40, 6)
    quick = _params(False, 3, 0)
    requests = ([Request(_tokens(vocab, 6, 7), _params(True, 70, 7))]
                + [Request(_tokens(vocab, 4 + i, 8 + i), quick) for i in range(3)]  # free 3 slots at once
                + [Request(head + _tokens(vocab, 20, 11), _params(True, 6, 11)),
                   Request(head + _tokens(vocab, 35, 12), _params(True, 6, 12)),
                   Request(head + _tokens(vocab, 20, 11), _params(True, 6, 13))])  # the first one's prompt again
    runs = {}
    for cache in (0, 1 << 30):
        engine = Engine.load(tiny_artifact[1], max_batch=4, prefill_chunk=CHUNK, prefix_cache=cache)
        log = _spy(monkeypatch)
        runs[cache] = ([c.tokens for c in engine.generate_batch(requests)], engine.last_stats)
        assert _most_pieces_between_steps(log) == 1
        monkeypatch.undo()
    (off, off_stats), (on, on_stats) = runs[0], runs[1 << 30]
    assert on == off
    assert off_stats.prefill_tokens == 6 + 4 + 5 + 6 + 60 + 75  # the repeated prompt is forked, not computed
    assert on_stats.prefill_tokens == 6 + 4 + 5 + 6 + 60 + 35 and on_stats.prefix_hits == 1  # the head: once


def test_prefill_options_are_checked_once(tiny_artifact):
    for bad in (0, -3, 2.5, True, "512"):
        with pytest.raises(RequestError, match="prefill_chunk must be a number of tokens >= 1"):
            Engine.load(tiny_artifact[1], prefill_chunk=bad)
    with pytest.raises(RequestError, match="prefill_budget"):
        Engine.load(tiny_artifact[1], prefill_budget=0)


# ---------------------------------------------------------------- the server's scheduler


def _collect(name: str, log: list, done: threading.Event, then=None):
    """A sink: every delta into `log` in the order the scheduler thread hands them out."""
    def sink(deltas):
        for d in deltas:
            log.append((name, d.token))
            if then is not None:
                then(sum(1 for n, _ in log if n == name))
            if d.finish_reason:
                log.append((name, d.completion))
                done.set()
    return sink


def test_the_scheduler_streams_a_short_request_through_a_long_prefill(engine):
    vocab = engine.dims.vocab_size
    short = Request(_tokens(vocab, 6, 20), _params(True, 80, 20))
    long = Request(_tokens(vocab, 120, 21), _params(True, 5, 21))
    alone = [engine.generate_batch([r])[0].tokens for r in (short, long)]
    scheduler = Scheduler(engine, max_batch=2).start()
    log: list = []
    finished = [threading.Event(), threading.Event()]

    def arrive(count):  # on the short one's 2nd token the long one arrives (counted, not timed)
        if count == 2:
            log.append(("long arrives", None))
            scheduler.submit([long], _collect("long", log, finished[1]))

    try:
        scheduler.submit([short], _collect("short", log, finished[0], arrive))
        assert all(e.wait(60) for e in finished)
    finally:
        scheduler.close()
    completions = {name: c for name, c in log if not isinstance(c, int) and c is not None}
    assert [completions["short"].tokens, completions["long"].tokens] == alone
    arrived = log.index(("long arrives", None))
    first_long = next(i for i, (name, _) in enumerate(log) if name == "long")
    during = sum(1 for name, _ in log[arrived:first_long] if name == "short")
    assert during >= -(-120 // CHUNK) - 1  # a token of the short one per chunk of the long one's prefill


def test_a_request_cancelled_while_it_is_prefilled_stops_its_prefill(engine):
    vocab = engine.dims.vocab_size
    short = Request(_tokens(vocab, 6, 30), _params(False, 40, 0))
    long = Request(_tokens(vocab, 120, 31), _params(False, 5, 0))
    scheduler = Scheduler(engine, max_batch=2).start()
    log, jobs = [], {}
    finished = [threading.Event(), threading.Event()]

    def drive(count):
        if count == 2:
            jobs["long"] = scheduler.submit([long], _collect("long", log, finished[1]))
        elif count == 6:  # a few chunks in
            jobs["long"].cancel()

    try:
        scheduler.submit([short], _collect("short", log, finished[0], drive))
        assert all(e.wait(60) for e in finished)
        m = scheduler.metrics()
    finally:
        scheduler.close()
    never = next(c for name, c in log if name == "long" and not isinstance(c, int))
    assert never.finish_reason == "cancelled" and never.tokens == []
    assert m.cancelled == 1 and CHUNK <= m.prefill_tokens - 6 < 120 // 2  # its prefill stopped early
    assert next(c for name, c in log if name == "short" and not isinstance(c, int)).finish_reason == "length"
