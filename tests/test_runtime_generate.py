"""The runtime against transformers, and its batching, forking, streaming and sampling."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from zaya_edge.runtime import Engine, Request, SamplingParams
from zaya_edge.runtime.batch import SequenceBatch
from zaya_edge.runtime.session import DecoderSession

torch = pytest.importorskip("torch")

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=64, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(tiny_artifact):
    return Engine.load(tiny_artifact[1])


def _prompts(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [tuple(int(t) for t in rng.integers(7, vocab, n)) for n in lengths]


def _hf_greedy(model, prompts, new_tokens):
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    return out[:, width:].tolist()


def test_greedy_matches_transformers_batched_and_one_by_one(tiny_artifact, engine):
    model, _ = tiny_artifact
    prompts = _prompts(model.config.vocab_size, (5, 11, 17))
    ref = _hf_greedy(model, prompts, 64)
    batched = engine.generate_batch([Request(p, GREEDY) for p in prompts])
    assert [c.tokens for c in batched] == ref
    assert all(len(c.tokens) == 64 and c.finish_reason == "length" for c in batched)
    for p, expected in zip(prompts, ref):
        assert engine.generate_batch([Request(p, GREEDY)])[0].tokens == expected


def test_one_session_call_per_decode_step_for_the_whole_batch(engine, tiny_artifact):
    prompts = _prompts(tiny_artifact[0].config.vocab_size, (4, 9, 6, 12))
    params = SamplingParams(temperature=0.0, max_new_tokens=10, ignore_eos=True)
    engine.generate_batch([Request(p, params) for p in prompts])
    # one left-padded prefill call, then one call per step (the 10th token needs no call)
    assert engine.last_stats.session_calls == 1 + 9


def test_more_requests_than_slots_refill_and_match_single_runs(tiny_artifact):
    """Slots freed by finished sequences are refilled; results equal running each alone."""
    engine = Engine.load(tiny_artifact[1], max_batch=2)
    prompts = _prompts(tiny_artifact[0].config.vocab_size, (3, 14, 7, 9, 5), seed=3)
    budgets = (5, 20, 8, 13, 11)
    reqs = [Request(p, SamplingParams(temperature=0.0, max_new_tokens=b, ignore_eos=True)) for p, b in zip(prompts, budgets)]
    together = engine.generate_batch(reqs)
    alone = [engine.generate_batch([r])[0] for r in reqs]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    assert [len(c.tokens) for c in together] == list(budgets)


def test_identical_prompts_prefill_once_and_fork(engine, tiny_artifact, monkeypatch):
    from zaya_edge.runtime import batch

    prompt = _prompts(tiny_artifact[0].config.vocab_size, (13,), seed=4)[0]
    reqs = [Request(prompt, SamplingParams(temperature=1.0, max_new_tokens=12, seed=s, ignore_eos=True)) for s in range(4)]
    prefilled = []
    real = batch.SequenceBatch._prefill
    monkeypatch.setattr(batch.SequenceBatch, "_prefill", lambda self, ps: prefilled.append(len(ps)) or real(self, ps))
    forked = engine.generate_batch(reqs)
    monkeypatch.undo()
    assert prefilled == [1]  # one prompt prefilled, the other three rows forked from it
    assert engine.last_stats.prompt_tokens == 4 * 13
    alone = [engine.generate_batch([r])[0].tokens for r in reqs]
    assert [c.tokens for c in forked] == alone
    assert len({tuple(t) for t in alone}) > 1  # different seeds really differ


def test_fork_and_restore_equal_recomputing(tiny_artifact):
    session = DecoderSession(tiny_artifact[1])
    vocab = tiny_artifact[0].config.vocab_size
    prefix, cont_a, cont_b = _prompts(vocab, (9, 5, 3), seed=5)
    # recompute from scratch
    fresh = SequenceBatch(session, 1, capacity=32)
    ref_a = fresh.admit({"a": prefix + cont_a})["a"]
    fresh = SequenceBatch(session, 1, capacity=32)
    ref_b = fresh.admit({"b": prefix + cont_b})["b"]
    # prefill the prefix once, fork it into row 1, continue the rows differently
    dec = SequenceBatch(session, 2, capacity=32)
    dec.admit({"a": prefix})
    dec.fork("a", "b")
    got_a = dec.extend("a", list(cont_a))
    got_b = dec.extend("b", list(cont_b))
    assert np.abs(got_a - ref_a).max() <= 1e-5
    assert np.abs(got_b - ref_b).max() <= 1e-5
    assert got_a.argmax() == ref_a.argmax() and got_b.argmax() == ref_b.argmax()
    # save -> admit into another batch whose columns are already in use
    snap = dec.save("b", got_b)
    other = SequenceBatch(session, 2, capacity=64)
    other.admit({"x": _prompts(vocab, (20,), seed=6)[0]})
    other.admit({"b": snap})
    nxt = [7, 8]
    got = other.extend("b", nxt)
    ref = SequenceBatch(session, 1, capacity=32).admit({0: list(prefix + cont_b) + nxt})[0]
    assert np.abs(got - ref).max() <= 1e-5


def test_defragment_keeps_logits(tiny_artifact):
    session = DecoderSession(tiny_artifact[1])
    vocab = tiny_artifact[0].config.vocab_size
    a, b = _prompts(vocab, (6, 10), seed=7)
    dec = SequenceBatch(session, 2, capacity=64)
    dec.admit({"a": a})
    dec.admit({"b": b[:1]})  # b joins later: holes in its columns,
    dec.extend("b", list(b[1:]))  # and a gets holes too while b grows alone
    cols_before = dec._cache.columns
    dec._cache.defragment()
    assert dec._cache.columns == max(len(a), len(b)) < cols_before
    got = dec.step({"a": 5, "b": 6})
    ref_a = SequenceBatch(session, 1, capacity=32).admit({0: list(a) + [5]})[0]
    ref_b = SequenceBatch(session, 1, capacity=32).admit({0: list(b) + [6]})[0]
    assert np.abs(got["a"] - ref_a).max() <= 1e-5 and np.abs(got["b"] - ref_b).max() <= 1e-5


def test_seed_reproducibility(engine):
    p = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=24, seed=1234, ignore_eos=True)
    first = engine.generate("Tell me a story", p).text()
    again = engine.generate("Tell me a story", p)
    assert again.text() == first
    other = engine.generate("Tell me a story", SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=24, seed=99, ignore_eos=True))
    other.text()
    assert other.tokens != again.tokens


def test_cancel_from_another_thread_stops_within_one_step(engine):
    gen = engine.generate("Count to a thousand", SamplingParams(max_new_tokens=400, seed=0, ignore_eos=True))
    at_cancel = None
    for _ in gen:
        if at_cancel is None and len(gen.tokens) >= 5:
            t = threading.Thread(target=gen.cancel)
            t.start()
            t.join()
            at_cancel = len(gen.tokens)
    assert at_cancel is not None
    assert len(gen.tokens) == at_cancel
    assert gen.completion.finish_reason == "cancelled"


def test_stats_are_reported(engine):
    gen = engine.generate("hello", SamplingParams(max_new_tokens=16, seed=0, ignore_eos=True))
    gen.text()
    s = gen.stats
    assert s.generated_tokens == 16 and s.prompt_tokens > 0
    assert s.time_to_first_token_s > 0 and s.decode_tokens_per_s > 0 and s.prefill_tokens_per_s > 0
    assert s.cache_bytes > 0 and s.peak_rss_bytes > 0 and s.load_seconds > 0


def test_stop_strings_and_stop_tokens(engine):
    free = engine.generate("abc", SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eos=True))
    text = free.text()
    assert len(text) > 6
    stop = text[3:6]
    cut = engine.generate("abc", SamplingParams(temperature=0.0, max_new_tokens=40, stop_strings=(stop,), ignore_eos=True))
    assert cut.text() == text[: text.index(stop)]
    assert cut.completion.finish_reason == "stop"
    third = free.tokens[2]
    by_token = engine.generate("abc", SamplingParams(temperature=0.0, max_new_tokens=40, stop_token_ids=(third,), ignore_eos=True))
    by_token.text()
    assert by_token.tokens == free.tokens[: free.tokens.index(third) + 1]
    assert by_token.completion.finish_reason == "stop"


def test_chat_keeps_the_cache_between_turns(engine):
    params = SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True)
    chat = engine.chat(params)
    chat.send("first question").text()
    history = len(chat.history)
    turn2 = chat.send("and a second one")
    reply2 = turn2.text()
    # only the new turn was prefilled, not the conversation
    assert turn2.stats.prompt_tokens == len(turn2.requests[0].prompt_ids) - history < len(turn2.requests[0].prompt_ids)
    # recomputing the same token history from scratch gives the same reply
    ref = engine.generate_batch([Request(turn2.requests[0].prompt_ids, params)])[0]
    assert reply2 == ref.text and turn2.tokens == ref.tokens
    chat.reset()
    assert chat.history == [] and chat.messages == []


def test_long_different_prompts_in_one_batch(tiny_artifact, monkeypatch):
    """Prompts longer than a prefill chunk, several at once, equal running each alone."""
    from zaya_edge.runtime import batch

    monkeypatch.setattr(batch, "PREFILL_CHUNK", 8)
    engine = Engine.load(tiny_artifact[1])
    prompts = _prompts(tiny_artifact[0].config.vocab_size, (21, 13, 30), seed=8)
    params = SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True)
    together = engine.generate_batch([Request(p, params) for p in prompts])
    ref = _hf_greedy(tiny_artifact[0], prompts, 6)
    assert [c.tokens for c in together] == ref


def test_decode_writes_the_cache_in_place(tiny_artifact, monkeypatch):
    """A decode step binds each layer's KV buffer as both past and present and the graph
    writes the new column straight into it: no cache copy, no reallocation."""
    from zaya_edge import artifact as A
    from zaya_edge.runtime import cache as cache_module

    sess = DecoderSession(tiny_artifact[1])
    dec = SequenceBatch(sess, 2, 64)
    vocab = sess.dims.vocab_size
    dec.admit(dict(enumerate(_prompts(vocab, [5, 9], seed=3))))
    bound = {}
    real_bind = cache_module.bind

    def spy(binding, name, array, output=False):
        bound[name] = array.ctypes.data
        real_bind(binding, name, array, output)

    monkeypatch.setattr(cache_module, "bind", spy)
    dec._bindings.clear()  # bindings are cached per (rows, phase, capacity): watch fresh ones being made
    cache = dec._cache
    keys = [k.ctypes.data for k in cache.key]
    for step in range(3):
        col = cache.columns
        assert not cache.key[0][:, :, col].any()
        dec.step({0: 11 + step, 1: 12 + step})
        assert cache.key[0][:, :, col].any() and cache.value[-1][:, :, col].any()
    assert [k.ctypes.data for k in cache.key] == keys
    for i in range(sess.dims.num_layers):
        assert bound[A.PAST_KEY % i] == bound[A.PRESENT_KEY % i] == cache.key[i].ctypes.data
        assert bound[A.PAST_VALUE % i] == bound[A.PRESENT_VALUE % i] == cache.value[i].ctypes.data


def test_an_abandoned_chat_stream_leaves_the_session_consistent(engine):
    """A turn the caller stops reading (the object still alive) is closed by the next send():
    the next reply is what a fresh session gives for the same conversation."""
    params = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    chat = engine.chat(params)
    chat.send("first question").text()
    abandoned = chat.send("second question")
    for i, _ in enumerate(abandoned):
        if i == 2:
            break
    reply = chat.send("third question").text()
    fresh = engine.chat(params)
    fresh.messages = [dict(m) for m in chat.messages[:-2]]  # up to the third question
    assert fresh.send("third question").text() == reply
    assert chat.history == fresh.history and chat.messages == fresh.messages


def test_a_turn_over_the_context_is_refused_and_the_chat_goes_on(engine):
    """A message that cannot fit is one ContextFullError; it is not kept, and the next turn is what
    a session that never saw it would answer."""
    from zaya_edge.errors import ContextFullError

    params = SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True)
    chat = engine.chat(params)
    chat.send("first question").text()
    before = [dict(m) for m in chat.messages]
    with pytest.raises(ContextFullError):
        chat.send("word " * engine.context_length)
    assert chat.messages == before
    reply = chat.send("second question").text()
    fresh = engine.chat(params)
    fresh.send("first question").text()
    assert fresh.send("second question").text() == reply
    assert chat.messages == fresh.messages and chat.history == fresh.history


def test_a_turn_sent_but_never_read_is_not_kept(engine):
    """send() twice without reading the first: the first never reached the model, so the history
    holds only the second exchange, as a session that never saw the first would."""
    params = SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True)
    chat = engine.chat(params)
    chat.send("never read")
    reply = chat.send("second question").text()
    fresh = engine.chat(params)
    assert fresh.send("second question").text() == reply
    assert chat.messages == fresh.messages
