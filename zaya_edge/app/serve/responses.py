"""The response shapes: one `Reply` gathers a request's deltas into OpenAI's chunks and final body.

    chat         {"object": "chat.completion", "choices": [{"message": {role, content, reasoning_content},
                  "logprobs": {"content": [...]}, "finish_reason"}], "usage"}
    completions  {"object": "text_completion", "choices": [{"text", "logprobs": {tokens, token_logprobs,
                  top_logprobs, text_offset}, "finish_reason"}], "usage"}

Streamed, each chunk carries one choice's delta ("chat.completion.chunk" / "text_completion").
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid

from zaya_edge.runtime.scheduler import Delta, TokenLogprobs

from .prepare import Plan
from .reasoning import ReasoningSplitter

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class TokenText:
    """Token ids as the strings logprobs show (cached: the same few thousand recur)."""

    def __init__(self, codec):
        self.codec, self._cache = codec, {}

    def __call__(self, token: int) -> str:
        if token not in self._cache:
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[token] = self.codec.decode([token])
        return self._cache[token]

    def chat_entry(self, lp: TokenLogprobs) -> dict:
        def one(token, logprob):
            s = self(token)
            return {"token": s, "logprob": logprob, "bytes": list(s.encode("utf-8"))}

        return {**one(lp.token, lp.logprob), "top_logprobs": [one(t, v) for t, v in lp.top]}


@dataclasses.dataclass
class _Choice:
    splitter: ReasoningSplitter | None
    text: str = ""
    reasoning: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenLogprobs] = dataclasses.field(default_factory=list)


class Reply:
    """One request's choices as deltas arrive: `add` gives the streamed entries, `body` the whole."""

    def __init__(self, chat: bool, model: str, plan: Plan, codec, split_reasoning: bool = True):
        self.chat, self.model, self.plan = chat, model, plan
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.token_text = TokenText(codec)
        self.choices = [_Choice(ReasoningSplitter() if chat and split_reasoning else None) for _ in plan.requests]

    @property
    def done(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)

    def usage(self) -> dict:
        return usage(self.plan.prompt_tokens, self.completion_tokens)

    def add(self, deltas: list[Delta]) -> list[dict]:
        """Fold deltas in; returns the choice entries a stream sends for them (empty ones left out)."""
        out = []
        for d in deltas:
            c = self.choices[d.choice]
            c.tokens += d.token >= 0
            if d.logprobs is not None:
                c.logprobs.append(d.logprobs)
            reasoning, content = self._split(c, d.text, d.finish_reason is not None)
            c.text += content
            c.reasoning += reasoning
            c.finish_reason = FINISH[d.finish_reason] if d.finish_reason else None
            if content or reasoning or d.logprobs is not None or c.finish_reason:
                out.append(self._entry(d.choice, content, reasoning, d.logprobs, c.finish_reason))
        return out

    def _split(self, c: _Choice, text: str, last: bool) -> tuple[str, str]:
        if c.splitter is None:
            return "", text
        reasoning, content = c.splitter.push(text)
        if last:
            r, t = c.splitter.flush()
            reasoning, content = reasoning + r, content + t
        return reasoning, content

    def _entry(self, index, content, reasoning, lp, finish) -> dict:
        if not self.chat:
            logprobs = self._text_logprobs([lp], 0) if lp is not None else None
            return {"index": index, "text": content, "logprobs": logprobs, "finish_reason": finish}
        delta = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
        logprobs = {"content": [self.token_text.chat_entry(lp)]} if lp is not None else None
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    def role_entries(self) -> list[dict]:
        """Chat streams open every choice with the assistant's role."""
        return [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for i in range(len(self.choices))]

    def chunk(self, choices: list[dict], with_usage: bool = False, **extra) -> dict:
        out = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": choices, **extra}
        if with_usage:
            out["usage"] = None
        return out

    def body(self, **extra) -> dict:
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model,
                "choices": [self._final(i, c) for i, c in enumerate(self.choices)], "usage": self.usage(), **extra}

    def _final(self, index: int, c: _Choice) -> dict:
        if not self.chat:
            lp = self._text_logprobs(c.logprobs, 0) if self.plan.top_logprobs is not None else None
            return {"index": index, "text": c.text, "logprobs": lp, "finish_reason": c.finish_reason}
        message = {"role": "assistant", "content": c.text}
        if c.splitter is not None:
            message["reasoning_content"] = c.reasoning or None
        lp = {"content": [self.token_text.chat_entry(x) for x in c.logprobs]} if self.plan.top_logprobs is not None else None
        return {"index": index, "message": message, "logprobs": lp, "finish_reason": c.finish_reason}

    def _text_logprobs(self, lps: list[TokenLogprobs], offset: int) -> dict:
        tokens = [self.token_text(x.token) for x in lps]
        offsets = list(itertools.accumulate(map(len, tokens[:-1]), initial=offset)) if tokens else []
        top = [{self.token_text(t): v for t, v in x.top} for x in lps]
        return {"tokens": tokens, "token_logprobs": [x.logprob for x in lps],
                "top_logprobs": top if self.plan.top_logprobs else None, "text_offset": offsets}
