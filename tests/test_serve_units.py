"""The pieces behind `zaya-edge serve`, in process: the reasoning split, the RSA field mapping, and
the runtime's continuous-batching scheduler (admission between steps, cancellation, failures)."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from serve_helpers import shared_reasoner

pytest.importorskip("fastapi")

from zaya_edge.app.serve import rsa  # noqa: E402
from zaya_edge.app.serve.api_errors import APIError  # noqa: E402
from zaya_edge.app.serve.models import ChatRequest  # noqa: E402
from zaya_edge.app.serve.reasoning import ReasoningSplitter, split_reasoning  # noqa: E402
from zaya_edge.runtime import Engine, Request, SamplingParams  # noqa: E402
from zaya_edge.runtime.scheduler import QueueFull, Scheduler, token_logprobs  # noqa: E402

REPLY = "<think>\n12 + 30\n2+0=2, 2; 1 + 3\n1+3=4, 42\n</think>\nThe answer is \\boxed{42}."


# ---------------------------------------------------------------- reasoning split


@pytest.mark.parametrize("text,expected", [
    (REPLY, ("\n12 + 30\n2+0=2, 2; 1 + 3\n1+3=4, 42\n", "\nThe answer is \\boxed{42}.")),
    ("no thinking here", ("", "no thinking here")),
    ("<think>cut off by the budget", ("cut off by the budget", "")),
    ("a <thin b", ("", "a <thin b")),
    ("<think>x</think>y <think> z", ("x", "y <think> z")),  # after </think> everything is content
])
def test_reasoning_split_whole_and_streamed_agree(text, expected):
    assert split_reasoning(text) == expected
    for size in (1, 2, 3, 5):
        s, parts = ReasoningSplitter(), []
        for i in range(0, len(text), size):
            parts.append(s.push(text[i : i + size]))
        parts.append(s.flush())
        assert ("".join(p[0] for p in parts), "".join(p[1] for p in parts)) == expected


# ---------------------------------------------------------------- RSA fields -> MarkovianRSA


def _request(**fields):
    return ChatRequest(messages=[{"role": "user", "content": "What is 1 + 2?"}], **fields)


def test_zyphra_fields_map_onto_markovian_rsa():
    vote, _ = rsa.strategy(_request(rsa_n=8, rsa_k=4, rsa_t=2, short_resp_len=300, tail_window_len=100,
                                    rsa_final_n=0, max_tokens=500, temperature=0.8, seed=4))
    assert (vote.population, vote.subset, vote.rounds, vote.budget, vote.tail, vote.final_budget, vote.select,
            vote.temperature, vote.seed) == (8, 4, 2, 300, 100, 500, "vote", 0.8, 4)
    agg, fields = rsa.strategy(_request(rsa_t=3, short_resp_len=300))  # the proxy's defaults: N16 C4, one final sample
    assert (agg.population, agg.subset, agg.rounds, agg.select, agg.final_budget, agg.tail) == (16, 4, 2, "aggregate", 300, 300)
    whole, _ = rsa.strategy(_request(rsa_t=1, short_resp_len=300, rsa_tail_window=False, rsa_final_n=0))
    assert whole.tail == whole.budget == 300
    words, _ = rsa.strategy(_request(rsa_t=1, rsa_final_n=0, short_resp_len=300, rsa_tail_unit="words"))
    assert words.tail_unit == "words" and fields["rsa_n"] == 16
    preset, fields = rsa.strategy(_request(rsa_preset="edge"))
    assert (preset.population, preset.rounds, preset.budget, preset.final_budget, preset.select) == (8, 2, 8192, 40960, "vote")
    assert rsa.strategy(_request()) is None and rsa.strategy(_request(rsa_t=0)) is None


def test_unmappable_fields_are_refused():
    for fields in [dict(rsa_t=1, rsa_final_n=2), dict(rsa_t=1, final_temperature=1.0), dict(rsa_t=1, max_tokens=10)]:
        with pytest.raises(APIError) as err:
            rsa.strategy(_request(**fields))
        assert err.value.status == 400 and err.value.param in {"rsa_final_n", "final_temperature", "max_tokens"}


# ---------------------------------------------------------------- the scheduler


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.load(shared_reasoner(tmp_path_factory), threads=1)


def _requests(engine, problems, **params):
    params = {"temperature": 0, "max_new_tokens": 160, **params}
    return [Request(tuple(engine.codec.chat_prompt(p)), SamplingParams(**params)) for p in problems]


PROBLEMS = ["What is 4837 + 2958?", "What is 12 + 30?", "What is 999 + 1?", "What is 12 + 30?", "What is 71 + 6?"]


def test_sequences_admitted_between_steps_decode_as_they_would_alone(engine):
    requests = _requests(engine, PROBLEMS)
    solo = [engine.generate_batch([r])[0] for r in requests]
    scheduler = Scheduler(engine, max_batch=2, max_queue=8).start()
    try:
        got = [None] * len(requests)
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, scheduler.generate_batch([requests[i]])[0]))
                   for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [c.tokens for c in got] == [c.tokens for c in solo]
        assert [c.tokens for c in scheduler.generate_batch(requests)] == [c.tokens for c in solo]
        m = scheduler.metrics()
        assert m.live_sequences == m.queue_length == 0 and m.prefill_tokens < m.prompt_tokens  # "12 + 30" shared
    finally:
        scheduler.close()


def test_cancelled_jobs_leave_and_waiting_ones_never_start(engine):
    scheduler = Scheduler(engine, max_batch=1, max_queue=4).start()
    try:
        first, second = queue.Queue(), queue.Queue()
        long = _requests(engine, PROBLEMS[:1], max_new_tokens=900, ignore_eos=True)
        a = scheduler.submit(long, first.put)
        b = scheduler.submit(long, second.put)
        with pytest.raises(QueueFull):
            scheduler.submit(_requests(engine, PROBLEMS[:1] * 3), print)
        first.get(timeout=30)  # a is live
        b.cancel()
        a.cancel()
        never = _last(second).completion
        assert never.finish_reason == "cancelled" and never.tokens == []
        assert _last(first).finish_reason == "cancelled"
        assert scheduler.metrics().cancelled == 2
    finally:
        scheduler.close()


def _last(q):
    while True:
        deltas = q.get(timeout=30)
        if deltas[-1].finish_reason:
            return deltas[-1]


def test_a_failed_model_call_fails_its_jobs_and_the_scheduler_goes_on(engine, monkeypatch):
    scheduler = Scheduler(engine, max_batch=2).start()
    try:
        real, calls = scheduler.batch.step, []

        def flaky(tokens):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("onnxruntime failed")
            return real(tokens)

        monkeypatch.setattr(scheduler.batch, "step", flaky)
        with pytest.raises(RuntimeError, match="onnxruntime failed"):
            scheduler.generate_batch(_requests(engine, PROBLEMS[:2]))
        assert "\\boxed{42}" in scheduler.generate_batch(_requests(engine, PROBLEMS[1:2]))[0].text
        scheduler.submit(_requests(engine, PROBLEMS[:1]), lambda deltas: 1 / 0)  # a broken sink: dropped
        assert scheduler.generate_batch(_requests(engine, PROBLEMS[2:3]))[0].finish_reason == "eos"
        assert scheduler.metrics().running
    finally:
        scheduler.close()


def test_close_cancels_what_is_left(engine):
    scheduler = Scheduler(engine, max_batch=1).start()
    out = queue.Queue()
    scheduler.submit(_requests(engine, PROBLEMS[:2], max_new_tokens=900, ignore_eos=True), out.put)
    out.get(timeout=30)
    scheduler.close()
    reasons = []
    while not out.empty():
        reasons += [d.finish_reason for d in out.get_nowait() if d.finish_reason]
    assert reasons == ["cancelled", "cancelled"]
    with pytest.raises(QueueFull):
        scheduler.submit(_requests(engine, PROBLEMS[:1]), out.put)


def test_token_logprobs_are_a_log_softmax():
    logits = np.random.default_rng(0).normal(size=50).astype(np.float32)
    lp = token_logprobs(logits, 7, 3)
    ref = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    assert lp.logprob == pytest.approx(ref[7])
    assert [t for t, _ in lp.top] == list(np.argsort(-ref)[:3]) and lp.top[0][1] == pytest.approx(ref.max())
    assert token_logprobs(logits, 7, 0).top == ()
