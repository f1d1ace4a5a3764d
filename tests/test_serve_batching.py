"""Continuous batching behind the server: concurrent requests share one batch and get what they
would alone; identical prompts are prefilled once; a client that disconnects leaves the batch;
a full queue answers 429."""

from __future__ import annotations

import concurrent.futures
import http.client
import json

import pytest

from serve_helpers import KEY, MODEL, artifact, module_server, running_server, wait_for  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")

PROBLEMS = ["What is 4837 + 2958?", "What is 12 + 30?", "What is 999 + 1?", "What is 5 + 70?",
            "What is 3071 + 88?", "What is 64 + 64?"]
LONG = {"max_tokens": 900, "extra_body": {"ignore_eos": True}}  # keeps a sequence live for a while


server = module_server("--api-key", KEY, "--max-batch", "4")


def _chat(client, problem, **kwargs):
    kwargs.setdefault("max_tokens", 160)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": problem}],
                                          temperature=0, **kwargs)


def _delta(server, before, name):
    return server.metrics()[name] - before[name]


def test_concurrent_requests_join_one_batch_and_match_their_solo_replies(artifact, server):
    from zaya_edge.runtime import Engine, Request, SamplingParams

    engine = Engine.load(artifact, threads=1)
    solo = [engine.generate_batch([Request(tuple(engine.codec.chat_prompt(p)), SamplingParams(temperature=0, max_new_tokens=160))])[0]
            for p in PROBLEMS]
    client = server.client()
    before = server.metrics()
    with concurrent.futures.ThreadPoolExecutor(len(PROBLEMS)) as pool:
        replies = list(pool.map(lambda p: _chat(client, p, extra_body={"reasoning_inline": True}), PROBLEMS))
    assert [r.choices[0].message.content for r in replies] == [c.text for c in solo]
    tokens = _delta(server, before, "zaya_edge_generated_tokens_total")
    assert tokens == sum(len(c.tokens) for c in solo)
    assert _delta(server, before, "zaya_edge_model_calls_total") < tokens  # steps were shared
    assert server.metrics()["zaya_edge_live_sequences"] == 0


def test_identical_prompts_are_prefilled_once_then_come_from_the_prefix_cache(artifact, server):
    client = server.client()
    before = server.metrics()
    problem = "What is 4242 + 1717, and why?"  # a prompt no other test sent: not in the prefix cache yet
    r = _chat(client, problem, n=3, max_tokens=4)
    assert len(r.choices) == 3 and r.usage.prompt_tokens > 0
    assert _delta(server, before, "zaya_edge_prompt_tokens_total") == 3 * r.usage.prompt_tokens
    assert _delta(server, before, "zaya_edge_prefill_tokens_total") == r.usage.prompt_tokens
    assert _delta(server, before, "zaya_edge_prefix_hits_total") == 0
    before = server.metrics()
    assert _chat(client, problem, max_tokens=4).usage.prompt_tokens == r.usage.prompt_tokens
    assert _delta(server, before, "zaya_edge_prefill_tokens_total") == 0  # the whole prompt was cached
    assert _delta(server, before, "zaya_edge_prefix_hits_total") == 1
    assert _delta(server, before, "zaya_edge_prefix_reused_tokens_total") == r.usage.prompt_tokens
    assert server.metrics()["zaya_edge_prefix_cache_bytes"] > 0


def test_a_disconnected_client_leaves_the_batch(server):
    before = server.metrics()
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROBLEMS[1]}], "stream": True,
            "max_tokens": 900, "ignore_eos": True, "temperature": 0}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.fp.readline()  # the first event arrived: the sequence is live
    conn.sock.close()
    conn.close()
    left = wait_for(lambda: _delta(server, before, "zaya_edge_cancelled_sequences_total") == 1)
    assert left and server.metrics()["zaya_edge_live_sequences"] == 0
    assert _delta(server, before, "zaya_edge_generated_tokens_total") < 900


def test_a_full_queue_answers_429(artifact, tmp_path):
    with running_server(artifact, tmp_path / "server.log", "--max-batch", "1", "--max-queue", "1") as server:
        client = server.client(key=None)

        def ask(p):
            try:
                return _chat(client, p, **LONG).choices[0].finish_reason
            except openai.RateLimitError as exc:
                return exc

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(ask, PROBLEMS[:4]))
        refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
        assert refused and "length" in outcomes and len(refused) + outcomes.count("length") == 4, outcomes
        error = refused[0].body
        assert refused[0].status_code == 429 and error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert _chat(client, PROBLEMS[0]).choices[0].finish_reason == "stop"  # the server went on
        assert server.metrics()['zaya_edge_http_responses_total{path="/v1/chat/completions",status="429"}'] == len(refused)
