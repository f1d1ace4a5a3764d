"""Markovian RSA per request on the tiny reasoner: Zyphra's proxy fields in the body, the answer
with rsa_metadata and usage summed over every rollout, progress streamed before the answer, and
a 400 for whatever MarkovianRSA cannot express."""

from __future__ import annotations

import concurrent.futures

import pytest

from serve_helpers import KEY, MODEL, module_server

openai = pytest.importorskip("openai")

PROBLEM = "What is 4837 + 2958?"
SMALL = dict(rsa_n=4, rsa_k=2, short_resp_len=160, tail_window_len=112)  # tiny_arith's β and τ


server = module_server("--api-key", KEY, "--max-batch", "8")


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def _solve(client, problem=PROBLEM, **body):
    stream = body.pop("stream", False)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": problem}],
                                          stream=stream, extra_body=body)


def test_rsa_vote_returns_the_answer_metadata_and_summed_usage(client):
    r = _solve(client, **SMALL, rsa_t=1, rsa_final_n=0, seed=3)
    meta = r.model_extra["rsa_metadata"]
    assert "\\boxed{7795}" in r.choices[0].message.content and meta["answer"] == "7795"
    assert meta["selected_by"] == "vote" and sum(meta["votes"].values()) == 4
    assert [(s["round"], s["kind"], s["candidates"]) for s in meta["rounds"]] == [(0, "rollout", 4), (1, "aggregate", 4)]
    assert r.usage.completion_tokens == meta["generated_tokens"] == sum(s["generated_tokens"] for s in meta["rounds"])
    assert r.usage.prompt_tokens == sum(s["prompt_tokens"] for s in meta["rounds"])
    assert meta["settings"]["population"] == 4 and meta["settings"]["rounds"] == 1 and meta["settings"]["seed"] == 3
    again = _solve(client, **SMALL, rsa_t=1, rsa_final_n=0, seed=3).model_extra["rsa_metadata"]
    assert [s["answers"] for s in again["rounds"]] == [s["answers"] for s in meta["rounds"]]  # seeded


def test_rsa_final_aggregation_sample(client):
    meta = _solve(client, **SMALL, rsa_t=2, rsa_final_n=1, seed=0).model_extra["rsa_metadata"]
    assert [s["kind"] for s in meta["rounds"]] == ["rollout", "aggregate", "select"]
    assert meta["rounds"][-1]["candidates"] == 1 and meta["answer"] == "7795"


def test_rsa_preset_with_overrides(client):
    r = _solve(client, rsa_preset="edge", rsa_n=2, rsa_k=1, rsa_t=1, short_resp_len=160, tail_window_len=112,
               max_tokens=160, seed=1)
    meta = r.model_extra["rsa_metadata"]
    assert meta["request"]["rsa_preset"] == "edge" and meta["settings"]["subset"] == 1 and meta["answer"] == "7795"


def test_streamed_rsa_sends_progress_then_the_answer(client):
    chunks = list(_solve(client, **SMALL, rsa_t=1, rsa_final_n=0, seed=3, stream=True,
                         stream_options={"include_usage": True}))
    progress = [c.model_extra["rsa_progress"] for c in chunks if "rsa_progress" in c.model_extra]
    assert progress and progress[-1]["done"] and {p["stage"] for p in progress} == {0, 1}
    answer = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert chunks.index(answer[0]) > max(i for i, c in enumerate(chunks) if "rsa_progress" in c.model_extra)
    assert "\\boxed{7795}" in answer[0].choices[0].delta.content
    assert answer[0].model_extra["rsa_metadata"]["answer"] == "7795"
    assert chunks[-1].usage.completion_tokens == answer[0].model_extra["rsa_metadata"]["generated_tokens"]


def test_rsa_and_chat_share_the_batch(client):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        solve = pool.submit(_solve, client, **SMALL, rsa_t=1, rsa_final_n=0, seed=5)
        chat = pool.submit(lambda: client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "What is 12 + 30?"}], temperature=0, max_tokens=160))
        assert "\\boxed{42}" in chat.result().choices[0].message.content
        assert solve.result().model_extra["rsa_metadata"]["answer"] == "7795"


def test_rsa_t_0_with_one_final_prompt_is_a_plain_request(client):
    r = _solve(client, rsa_t=0, rsa_final_n=1, temperature=0, max_tokens=160)
    assert "rsa_metadata" not in r.model_extra and "\\boxed{7795}" in r.choices[0].message.content


@pytest.mark.parametrize("fields,param", [
    (dict(rsa_final_n=3, rsa_t=1), "rsa_final_n"),
    (dict(rsa_final_n=1, rsa_t=1, final_temperature=0.9), "final_temperature"),
    (dict(rsa_final_n=0, rsa_t=1, final_temperature=0.3), "final_temperature"),
    (dict(rsa_final_n=1, rsa_t=1, max_tokens=100), "max_tokens"),
    (dict(rsa_t=1, n=2), "n"),
    (dict(rsa_t=1, logprobs=True), "logprobs"),
    (dict(rsa_t=1, stop=["x"]), "stop"),
    (dict(rsa_preset="huge"), "rsa_preset"),
    (dict(rsa_n=4), "rsa_t"),
    (dict(rsa_t=1, rsa_k=0), "rsa_k"),
])
def test_what_cannot_be_mapped_is_400(server, fields, param):
    body = {"messages": [{"role": "user", "content": PROBLEM}], **{**SMALL, **fields}}
    status, reply = server.post("/v1/chat/completions", body)
    assert status == 400 and reply["error"]["param"] == param, reply


def test_rsa_that_cannot_fit_is_400(server):
    body = {"messages": [{"role": "user", "content": PROBLEM}], **SMALL, "rsa_t": 1, "short_resp_len": 5000,
            "rsa_final_n": 0}
    status, reply = server.post("/v1/chat/completions", body)
    assert status == 400 and "context" in reply["error"]["message"]
    body = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": PROBLEM}], **SMALL, "rsa_t": 1}
    assert server.post("/v1/chat/completions", body)[0] == 400
    body = {"messages": [{"role": "user", "content": PROBLEM}], **SMALL, "rsa_t": 1, "rsa_final_n": 0, "stream": True,
            "short_resp_len": 5000}
    assert server.post("/v1/chat/completions", body)[0] == 400  # refused before the stream starts
