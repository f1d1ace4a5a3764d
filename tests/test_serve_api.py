"""`zaya-edge serve` through the official openai client: a real server process on loopback.

Chat and completions, streamed and not; the greedy reply equals `zaya-edge run`'s; usage, stop
strings, seeds, logprobs; and every refusal as an OpenAI error body (400, 401), never a traceback.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from serve_helpers import KEY, MODEL, artifact, module_server  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")

PROBLEM = "What is 4837 + 2958?"
BUDGET = 160  # tiny_arith.BUDGET: the reasoner's longest solution fits


server = module_server("--api-key", KEY, "--max-batch", "4")


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def _ask(client, content=PROBLEM, **kwargs):
    kwargs.setdefault("max_tokens", BUDGET)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def _zaya_edge_run(artifact, *args) -> str:
    r = subprocess.run([sys.executable, "-m", "zaya_edge", "run", str(artifact), *args, "--temperature", "0",
                        "--max-new-tokens", str(BUDGET), "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout[:-1]  # the command ends the reply with a newline


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_greedy_chat_equals_zaya_edge_run_and_splits_reasoning(artifact, client):
    expected = _zaya_edge_run(artifact, PROBLEM)
    inline = _ask(client, temperature=0, extra_body={"reasoning_inline": True}).choices[0]
    assert inline.message.content == expected and inline.finish_reason == "stop"
    split = _ask(client, temperature=0).choices[0].message
    reasoning = split.model_extra["reasoning_content"]
    assert "<think>" not in split.content and "7795" in reasoning
    assert f"<think>{reasoning}</think>{split.content}" == expected
    assert "\\boxed{7795}" in split.content


def test_greedy_completion_equals_zaya_edge_run_raw(artifact, client):
    prompt = "What is 12 + 30?"
    r = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=BUDGET)
    assert r.choices[0].text == _zaya_edge_run(artifact, prompt, "--raw")


def test_usage_counts_match_the_engine(artifact, client):
    from zaya_edge.runtime import Engine, Request, SamplingParams

    engine = Engine.load(artifact, threads=1)
    ids = tuple(engine.codec.chat_prompt(PROBLEM))
    done = engine.generate_batch([Request(ids, SamplingParams(temperature=0, max_new_tokens=BUDGET))])[0]
    u = _ask(client, temperature=0).usage
    assert (u.prompt_tokens, u.completion_tokens) == (len(ids), len(done.tokens))
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    cut = _ask(client, temperature=0, max_tokens=7)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 7
    cut = _ask(client, temperature=0, max_completion_tokens=5)
    assert cut.usage.completion_tokens == 5


def test_stream_equals_the_whole_reply(client):
    whole = _ask(client, temperature=0).choices[0].message
    chunks = list(_ask(client, temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices)
    assert (text, reasoning) == (whole.content, whole.model_extra["reasoning_content"])
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_stream_ends_in_done_on_the_wire(server):
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    body = {"model": MODEL, "prompt": "What is 5 + 70?", "max_tokens": 6, "temperature": 0, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events = [e for e in resp.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert sum(1 for c in chunks for ch in c["choices"] if ch["text"]) >= 1


def test_stop_strings_cut_the_reply(client):
    r = _ask(client, temperature=0, stop=["+ 2958"], extra_body={"reasoning_inline": True}).choices[0]
    assert r.finish_reason == "stop" and r.message.content == "<think>\n4837 "
    streamed = "".join(c.choices[0].delta.content or "" for c in _ask(client, temperature=0, stop=["+ 2958"], stream=True,
                                                                      extra_body={"reasoning_inline": True}) if c.choices)
    assert streamed == r.message.content


def test_seeds_are_reproducible(client):
    def sample(**kw):
        r = _ask(client, "What is 381 + 46?", temperature=1.5, top_p=0.95, seed=11, **kw)
        return [c.message.content + (c.message.model_extra["reasoning_content"] or "") for c in r.choices]

    one = sample()
    assert one == sample()
    three = sample(n=3)
    assert len(three) == 3 and three == sample(n=3) and three[0] == one[0]


def test_logprobs_follow_the_tokens(client):
    r = _ask(client, temperature=0, logprobs=True, top_logprobs=3)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token and e.logprob <= 0
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob
    c = client.completions.create(model=MODEL, prompt="What is 1 + 2?", temperature=0, max_tokens=4, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == c.choices[0].text


@pytest.mark.parametrize("body,param", [
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "9 " * 2000}]}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1}, "presence_penalty"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": [""]}, "stop"),
])
def test_invalid_requests_are_400_with_an_openai_body(server, body, param):
    status, reply = server.post("/v1/chat/completions", body)
    assert status == 400, reply
    assert set(reply["error"]) == {"message", "type", "param", "code"} and reply["error"]["param"] == param
    assert "Traceback" not in reply["error"]["message"]


def test_malformed_json_and_bad_prompts_are_400(server):
    status, reply = server.post("/v1/chat/completions", b'{"messages": [')
    assert status == 400 and reply["error"]["code"] == "invalid_json"
    status, reply = server.post("/v1/completions", {"prompt": [999999], "max_tokens": 2})
    assert status == 400 and "vocabulary" in reply["error"]["message"]
    status, reply = server.post("/v1/completions", {"prompt": "x", "max_tokens": 2, "echo": True})
    assert status == 400 and reply["error"]["param"] == "echo"


def test_the_api_key_is_required(server):
    for key in (None, "wrong"):
        status, reply = server.post("/v1/chat/completions", b"not even json", key=key)
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    assert server.metrics()["zaya_edge_batch_slots"] == 4  # /metrics and /health stay open
