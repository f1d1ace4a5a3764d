"""From a validated body to runtime Requests: the prompt's tokens, the sampler, one seed per choice.

What only the artifact knows is checked here, in the API's words (param names a client sent):
the model name, the context length, the vocabulary (Engine.encode_prompt), unsupported fields.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime import Engine, Request, SamplingParams

from .api_errors import bad_request
from .models import MAX_STOPS, ChatRequest, CompletionRequest, Sampling

DEFAULT_TEMPERATURE = 1.0  # OpenAI's


@dataclasses.dataclass
class Plan:
    """What a request runs: requests by choice index (prompt i, choice j at i * n + j)."""

    requests: list[Request]
    prompt_tokens: int  # each prompt counted once, whatever n
    n: int
    top_logprobs: int | None  # None: no logprobs


def check_model(body: Sampling, name: str) -> None:
    if body.model is not None and body.model != name:
        raise bad_request(f"the model {body.model!r} does not exist; this server serves {name!r}",
                          param="model", code="model_not_found")


def chat_prompt(engine: Engine, body: ChatRequest) -> tuple[int, ...]:
    """The conversation in the artifact's chat template, ready for the assistant's turn."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    try:
        ids = engine.codec.chat_ids(messages)
    except ZayaEdgeError:
        raise
    except Exception as exc:  # the template's own checks (jinja2 raise_exception, bad role order)
        raise bad_request(f"the chat template cannot render these messages: {exc}", param="messages") from None
    return engine.encode_prompt(ids)


def completion_prompts(engine: Engine, prompt) -> list[tuple[int, ...]]:
    """A text, a list of texts, a list of token ids or a list of such lists."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise bad_request("prompt is empty", param="prompt")
    try:
        return [engine.encode_prompt(p, chat=False) for p in prompt]
    except ZayaEdgeError as exc:
        raise bad_request(str(exc), param="prompt") from None


def _refuse_unsupported(body: Sampling) -> None:
    for field in ("presence_penalty", "frequency_penalty"):
        if getattr(body, field):
            raise bad_request(f"{field} is not supported (use repetition_penalty)", param=field)
    stops = body.stop_strings()
    if len(stops) > MAX_STOPS or not all(stops):
        raise bad_request(f"stop takes 1..{MAX_STOPS} non-empty strings", param="stop")


def sampling(body: Sampling, budget: int | None, longest_prompt: int, context: int) -> SamplingParams:
    """The sampler for every choice (seeds are set per choice by `plan`)."""
    _refuse_unsupported(body)
    param = "messages" if isinstance(body, ChatRequest) else "prompt"
    if longest_prompt >= context:
        raise bad_request(f"the prompt is {longest_prompt} tokens; this model's context is {context} tokens",
                          param=param, code="context_length_exceeded")
    max_tokens = budget if budget is not None else context - longest_prompt
    if longest_prompt + max_tokens > context:
        raise bad_request(f"the prompt ({longest_prompt} tokens) + max_tokens ({max_tokens}) exceeds this "
                          f"model's context of {context} tokens", param="max_tokens", code="context_length_exceeded")
    top_k = body.top_k if body.top_k is not None and body.top_k > 0 else 0
    return SamplingParams(
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_k=top_k, top_p=1.0 if body.top_p is None else body.top_p, min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0, max_new_tokens=max_tokens,
        stop_strings=body.stop_strings(), ignore_eos=body.ignore_eos)


def choice_seed(seed: int | None, index: int) -> int | None:
    """Choice 0 keeps the seed (as `zaya-edge run --seed` does); the others derive theirs from it."""
    if seed is None or index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def plan(body: Sampling, prompts: list[tuple[int, ...]], context: int, top_logprobs: int | None) -> Plan:
    params = sampling(body, body.budget, max(map(len, prompts)), context)
    requests = [Request(p, dataclasses.replace(params, seed=choice_seed(body.seed, i * body.n + j)))
                for i, p in enumerate(prompts) for j in range(body.n)]
    return Plan(requests, sum(map(len, prompts)), body.n, top_logprobs)


def chat_plan(engine: Engine, body: ChatRequest) -> Plan:
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
    top = (body.top_logprobs or 0) if body.logprobs else None
    return plan(body, [chat_prompt(engine, body)], engine.context_length, top)


def completion_plan(engine: Engine, body: CompletionRequest) -> Plan:
    if body.echo:
        raise bad_request("echo is not supported", param="echo")
    if body.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    return plan(body, completion_prompts(engine, body.prompt), engine.context_length, body.logprobs)
