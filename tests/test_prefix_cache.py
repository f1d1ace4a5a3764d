"""The prefix cache and shared-prefix prefill: the same logits as a fresh prefill, less work.

A prompt that starts from a cached prefix (a head several prompts share, a prompt seen before)
must give the logits a prefill of the whole prompt gives, whatever its remainder (0, 1 or many
tokens, across prefill chunks) and whatever else shares the batch (left padding, live rows).
"""

from __future__ import annotations

import numpy as np
import pytest

from zaya_edge.errors import RequestError
from zaya_edge.runtime import Engine, Request, SamplingParams, batch as batch_module
from zaya_edge.runtime import prefix_cache as pc
from zaya_edge.runtime.batch import SequenceBatch
from zaya_edge.runtime.prefix_cache import MIN_REUSE, PrefixCache, shared_heads
from zaya_edge.runtime.session import DecoderSession

TOL = 1e-5  # fp32 artifact: a split prefill differs from a whole one by rounding only


@pytest.fixture(scope="module")
def session(tiny_artifact):
    return DecoderSession(tiny_artifact[1])


def _tokens(vocab: int, n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(7, vocab, n)]


def _fresh(session, prompt) -> np.ndarray:
    """The reference: the prompt prefilled whole, alone, with no prefix cache."""
    return SequenceBatch(session, 1, capacity=len(prompt)).admit({0: list(prompt)})[0]


def _close(a, b) -> float:
    return float(np.abs(a - b).max())


def test_shared_head_is_computed_once_and_logits_match(session):
    vocab = session.dims.vocab_size
    head = _tokens(vocab, 40, seed=1)
    prompts = {  # remainders of 0, 1, 5 and 17 tokens after the shared head, and a stranger
        "whole": head, "one": head + [9], "five": head + _tokens(vocab, 5, 2),
        "long": head + _tokens(vocab, 17, 3), "other": _tokens(vocab, 12, 4),
    }
    cache = PrefixCache(1 << 30)
    dec = SequenceBatch(session, 5, capacity=64, prefix_cache=cache)
    got = dec.admit(prompts)
    stats = dec.take_stats()
    for name, p in prompts.items():
        assert _close(got[name], _fresh(session, p)) <= TOL, name
    # the head once, then only the remainders; the stranger is prefilled as it is
    assert stats.prefill_tokens == 40 + 1 + 5 + 17 + 12
    assert stats.prefix_hits == 4 and stats.prefix_tokens_reused == 4 * 40
    # the rows decode on from there as a fresh prefill does (different lengths in one batch)
    step = dec.step({name: 11 for name in prompts})
    for name, p in prompts.items():
        assert _close(step[name], _fresh(session, p + [11])) <= TOL, name


def test_a_cached_prompt_costs_no_model_call_and_one_more_token_one(session):
    vocab = session.dims.vocab_size
    prompt = _tokens(vocab, 45, seed=5)
    cache = PrefixCache(1 << 30)
    SequenceBatch(session, 1, capacity=64, prefix_cache=cache).admit({0: prompt})
    again = SequenceBatch(session, 1, capacity=64, prefix_cache=cache)
    logits = again.admit({0: prompt})[0]
    stats = again.take_stats()
    assert (stats.calls, stats.prefill_tokens, stats.prefix_hits, stats.prefix_tokens_reused) == (0, 0, 1, 45)
    assert _close(logits, _fresh(session, prompt)) <= TOL
    longer = SequenceBatch(session, 1, capacity=64, prefix_cache=cache)
    logits = longer.admit({0: prompt + [13]})[0]
    stats = longer.take_stats()
    assert (stats.calls, stats.prefill_tokens, stats.prefix_tokens_reused) == (1, 1, 45)
    assert _close(logits, _fresh(session, prompt + [13])) <= TOL


def test_a_hit_joins_a_batch_with_live_rows(session):
    """Restored right-aligned into columns other rows already use: the column contract holds."""
    vocab = session.dims.vocab_size
    cached, live = _tokens(vocab, 36, seed=6), _tokens(vocab, 50, seed=7)
    cache = PrefixCache(1 << 30)
    SequenceBatch(session, 1, capacity=64, prefix_cache=cache).admit({0: cached})
    dec = SequenceBatch(session, 3, capacity=64, prefix_cache=cache)
    dec.admit({"live": live})
    dec.step({"live": 5})
    got = dec.admit({"hit": cached + [8, 9], "whole": cached})
    stats = dec.take_stats()
    assert (stats.prefix_hits, stats.prefix_tokens_reused, stats.prefill_tokens) == (2, 2 * 36, 50 + 2)
    assert _close(got["hit"], _fresh(session, cached + [8, 9])) <= TOL
    assert _close(got["whole"], _fresh(session, cached)) <= TOL
    step = dec.step({"live": 6, "hit": 10, "whole": 11})
    assert _close(step["live"], _fresh(session, live + [5, 6])) <= TOL
    assert _close(step["hit"], _fresh(session, cached + [8, 9, 10])) <= TOL
    assert _close(step["whole"], _fresh(session, cached + [11])) <= TOL


def test_chunked_prefill_equals_one_shot(session, monkeypatch):
    """Prompts and remainders over several prefill chunks give the one-call logits."""
    vocab = session.dims.vocab_size
    head = _tokens(vocab, 37, seed=8)
    prompts = {"a": head + _tokens(vocab, 19, 9), "b": head + _tokens(vocab, 3, 10), "c": _tokens(vocab, 29, 11)}
    one_shot = {k: _fresh(session, p) for k, p in prompts.items()}
    monkeypatch.setattr(batch_module, "PREFILL_CHUNK", 8)
    for cache in (None, PrefixCache(1 << 30)):  # plain chunked prefill, then heads and remainders chunked
        got = SequenceBatch(session, 3, capacity=64, prefix_cache=cache).admit(prompts)
        for k in prompts:
            assert _close(got[k], one_shot[k]) <= TOL, (k, cache)
        chunked = {k: _fresh(session, p) for k, p in prompts.items()}
        assert all(_close(chunked[k], one_shot[k]) <= TOL for k in prompts)


def test_the_byte_bound_holds_and_the_least_recently_used_goes(session):
    vocab = session.dims.vocab_size
    prompts = [_tokens(vocab, 40, seed=20 + i) for i in range(4)]
    probe = PrefixCache(1 << 30)
    SequenceBatch(session, 1, capacity=64, prefix_cache=probe).admit({0: prompts[0]})
    entry = probe.nbytes  # one 40-token entry
    cache = PrefixCache(int(2.5 * entry))
    for i, p in enumerate(prompts):
        SequenceBatch(session, 1, capacity=64, prefix_cache=cache).admit({0: p})
        assert cache.nbytes <= cache.max_bytes
        assert cache.longest(prompts[0]) is not None  # used after every admit: it is never the one to go
    assert len(cache) == 2 and cache.stats.evicted == 2
    assert cache.longest(prompts[0]) is not None and cache.longest(prompts[1]) is None
    assert cache.longest(prompts[3]) is not None and cache.longest(prompts[2]) is None
    small = PrefixCache(entry // 2)  # an entry larger than the whole bound is not kept
    SequenceBatch(session, 1, capacity=64, prefix_cache=small).admit({0: prompts[0]})
    assert len(small) == 0 and small.nbytes == 0


def test_zero_bytes_turns_it_off(session):
    vocab = session.dims.vocab_size
    head = _tokens(vocab, 40, seed=30)
    cache = PrefixCache(0)
    dec = SequenceBatch(session, 2, capacity=64, prefix_cache=cache)
    dec.admit({0: head + [1], 1: head + [2]})
    stats = dec.take_stats()
    assert stats.prefix_hits == 0 and stats.prefill_tokens == 2 * 41 and stats.calls == 1 and len(cache) == 0


def test_a_hit_is_checked_token_by_token(monkeypatch):
    """Keys are hashes; two prompts whose hashes collide must not share a state."""
    monkeypatch.setattr(pc, "_chain", lambda ids: [0] * (len(ids) // pc.BLOCK + 1))  # every block collides
    cache = PrefixCache(1 << 20)
    a = list(range(100, 100 + 2 * pc.BLOCK))
    b = [7] + a[1:]  # same length and last block: the same key
    cache.put(a, _fake_entry())
    assert b not in cache and cache.longest(b) is None
    assert a in cache and cache.longest(a)[0] == len(a)


def _fake_entry():
    from zaya_edge.runtime.cache import RowState

    z = np.zeros((1, 4), np.float32)
    return pc.Prefilled(RowState([z], [z], [z], [z], 4), np.zeros(8, np.float32))


def test_longest_cached_prefix_and_shared_heads():
    cache = PrefixCache(1 << 20)
    long = list(range(1, 200))
    for n in (10, 70, 150):
        cache.put(long[:n], _fake_entry())
    assert cache.longest(long)[0] == 150
    assert cache.longest(long[:149])[0] == 70
    assert cache.longest(long[:149], shortest=71) is None
    assert cache.longest([0] + long) is None
    s = list(range(50, 50 + MIN_REUSE))
    heads = shared_heads([s + [1, 2], s + [1, 3], s + [4], list(range(9)), s + [1, 2, 5]])
    # where the prompts part ways: after s, after s + [1], and a prompt that another one extends
    assert heads == [tuple(s), tuple(s + [1]), tuple(s + [1, 2])]
    assert shared_heads([s[:-1] + [1], s[:-1] + [2]]) == []  # MIN_REUSE - 1 shared: not worth it


def test_engine_knob_and_its_one_line_errors(tiny_artifact):
    for bad in (-1, "1GB", 2.5, True):
        with pytest.raises(RequestError, match="prefix_cache must be a byte count"):
            Engine.load(tiny_artifact[1], prefix_cache=bad)
    assert Engine.load(tiny_artifact[1], prefix_cache=0).prefix_cache.enabled is False
    assert Engine.load(tiny_artifact[1]).prefix_cache.max_bytes == pc.DEFAULT_BYTES


def test_engine_reports_hits_and_repeated_prompts_match(tiny_artifact):
    engine = Engine.load(tiny_artifact[1])
    vocab = engine.dims.vocab_size
    head = _tokens(vocab, 48, seed=40)
    params = SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True)
    requests = [Request(tuple(head + _tokens(vocab, n, 41 + n)), params) for n in (3, 8, 5)]
    first = engine.generate_batch(requests)
    s = engine.last_stats
    assert s.prompt_tokens == 3 * 48 + 16 and s.prefill_tokens == 48 + 16
    assert s.prefix_hits == 3 and s.prefix_tokens_reused == 3 * 48
    again = engine.generate_batch(requests)  # every prompt cached whole now
    assert engine.last_stats.prefill_tokens == 0 and engine.last_stats.prefix_tokens_reused == 3 * 48 + 16
    plain = Engine.load(tiny_artifact[1], prefix_cache=0).generate_batch(requests)
    assert [c.tokens for c in first] == [c.tokens for c in again] == [c.tokens for c in plain]
    assert engine.prefix_cache.stats.hits == 6


def test_a_new_chat_starts_from_the_cached_prompt(tiny_artifact):
    engine = Engine.load(tiny_artifact[1])
    params = SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True)
    message = "a first question that is long enough to be worth caching"
    first = engine.chat(params).send(message)
    reply = first.text()
    second = engine.chat(params).send(message)
    assert second.text() == reply
    assert first.stats.prefix_hits == 0 and second.stats.prefix_hits == 1
    assert second.stats.prefill_tokens == 0 and second.stats.prefix_tokens_reused == len(second.requests[0].prompt_ids)


def test_rsa_is_the_same_with_and_without_the_prefix_cache(tiny_artifact):
    from zaya_edge.runtime.rsa import MarkovianRSA

    template = "Fix these. [[ Problem ]]:\n{problem}\n[[ Candidates ]]:\n{candidates}\nAnswer in \\boxed{}."
    strategy = MarkovianRSA(population=4, subset=2, rounds=2, budget=12, tail=6, seed=5, template=template)
    runs = {}
    for size in (0, 1 << 28):
        engine = Engine.load(tiny_artifact[1], prefix_cache=size)
        computed = []
        generate = engine.generate_batch

        def recording(requests, on_progress=None, generate=generate, engine=engine, computed=computed):
            out = generate(requests, on_progress)
            computed.append(engine.last_stats.prefill_tokens)
            return out

        engine.generate_batch = recording
        runs[size] = strategy.solve(engine, "What is 12 + 30?"), computed
    (plain, plain_work), (cached, cached_work) = runs[0], runs[1 << 28]
    assert [[c.text for c in r.candidates] for r in cached.rounds] == [[c.text for c in r.candidates] for r in plain.rounds]
    assert cached.answer == plain.answer
    # round 0 is one prompt either way; each aggregation round computes its shared head once
    assert cached_work[0] == plain_work[0]
    assert all(c < p for c, p in zip(cached_work[1:], plain_work[1:])), (cached_work, plain_work)


def test_solve_takes_the_flag_and_reports_what_the_cache_saved(tiny_artifact, tmp_path):
    import json

    from click.testing import CliRunner

    from zaya_edge.app.cli import main

    template = tmp_path / "short.txt"
    template.write_text("Fix these. [[ Problem ]]:\n{problem}\n[[ Candidates ]]:\n{candidates}\nAnswer in \\boxed{}.")
    args = ["solve", str(tiny_artifact[1]), "What is 12 + 30?", "--population", "4", "--subset", "2", "--rounds", "1",
            "--budget", "10", "--tail", "6", "--seed", "2", "--template", str(template), "--quiet", "--force"]
    runs = {}
    for size in ("0", "64MB"):
        report = tmp_path / f"report-{size}.json"
        run = CliRunner().invoke(main, args + ["--prefix-cache", size, "--report", str(report)])
        assert run.exit_code == 0, run.output
        runs[size] = run.output, json.loads(report.read_text())
    (off_out, off), (on_out, on) = runs["0"], runs["64MB"]
    assert on["answer"] == off["answer"] and _same_rounds(on, off)
    assert off["prefix_cache"]["hits"] == 0 and "prefix cache:" not in off_out
    assert on["prefix_cache"]["hits"] > 0 and f"prefix cache: {on['prefix_cache']['reused_tokens']} prompt tokens" in on_out
    bad = CliRunner().invoke(main, args + ["--prefix-cache", "lots"])
    assert bad.exit_code == 2 and "cannot read memory size 'lots'" in bad.output


def _same_rounds(a: dict, b: dict) -> bool:
    """Rounds equal but for their wall times."""
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_s", "tokens_per_s")}  # noqa: E731
    return [strip(r) for r in a["rounds"]] == [strip(r) for r in b["rounds"]]
