"""A scripted fake engine for the Markovian RSA tests: one token per character, so prompts and tails
can be asserted exactly. The fake's output depends only on (prompt, seed), like a real sampler."""

from __future__ import annotations

import random
import re

from zaya_edge.runtime.prefix_cache import PrefixCache
from zaya_edge.runtime.rsa import MarkovianRSA
from zaya_edge.runtime.types import BatchProgress, Completion

EOS = 0
PROBLEM = "Find x if 2x + 3 = 17. Put the answer in \\boxed{}."
WORDS = ["so", "then", "hence", "wait", "check", "sum", "carry", "try"]


class CharCodec:
    def encode(self, text):
        return [ord(ch) for ch in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i != EOS)

    def chat_prompt(self, user_message):
        return self.encode(f"<u>{user_message}</u><a>")


def chat_text(message):
    return f"<u>{message}</u><a>"


def default_script(prompt, seed):
    rng = random.Random(f"{seed}:{prompt}")
    words = " ".join(f"{rng.choice(WORDS)}{rng.randrange(100)}" for _ in range(rng.randint(15, 45)))
    answer = rng.choice(["7", "7", "12", "x^{2}"])
    return f"{words}\n</think>\nSo the answer is \\boxed{{{answer}}}."


class FakeEngine:
    """Scripted BatchGenerator: records every batch, reports one progress call per decode step."""

    def __init__(self, script=default_script, context_length=100_000, interrupt_at=None, bytes_per_token=10,
                 model_id="fake-model"):
        self.codec, self.context_length, self.model_id = CharCodec(), context_length, model_id
        self.script, self.interrupt_at, self.bytes_per_token = script, interrupt_at, bytes_per_token
        self.calls, self.outputs = [], []
        self.prefix_cache = PrefixCache(0)  # a scripted engine prefills nothing

    @classmethod
    def load(cls, path, threads=None, **options):
        return cls()

    def cache_bytes_per_sequence(self, length):
        return length * self.bytes_per_token

    def generate_batch(self, requests, on_progress=None):
        self.calls.append(list(requests))
        if self.interrupt_at == len(self.calls):
            raise KeyboardInterrupt
        outs = []
        for r in requests:
            ids = self.codec.encode(self.script(self.codec.decode(r.prompt_ids), r.params.seed))
            budget = r.params.max_new_tokens
            tokens, reason = (ids[:budget], "length") if len(ids) > budget else (ids + [EOS], "eos")
            outs.append(Completion(tokens, self.codec.decode(tokens), reason, len(r.prompt_ids)))
        longest = max(len(c.tokens) for c in outs)
        for step in range(1, longest + 1):
            live = sum(len(c.tokens) > step for c in outs)
            made = sum(min(len(c.tokens), step) for c in outs)
            if on_progress and on_progress(BatchProgress(live, len(outs) - live, made, step * 1e-3)) is False:
                return [Completion(c.tokens[:step], "", "cancelled", c.prompt_tokens) for c in outs]
        self.outputs.append(outs)
        return outs


def rsa(**kw):
    settings = dict(population=4, subset=2, rounds=2, budget=200, tail=50, final_budget=300, seed=1)
    return MarkovianRSA(**{**settings, **kw})


def population(result):
    return [[(c.text, c.subset, c.tail, c.finish_reason) for c in r.candidates] for r in result.stages]


def prompt_text(request):
    return CharCodec().decode(request.prompt_ids)


def shown_tails(prompt):
    """The tails in an aggregation prompt, in order, parsed back out of the shipped template."""
    body = prompt.split("[[ Candidate solutions (may contain mistakes) ]]:\n", 1)[1]
    body = body.rsplit("\n\nNow write a single improved solution", 1)[0]
    parts = re.split(r"---- Solution \d+ ----\n", body)[1:]
    return [p[:-2] if i < len(parts) - 1 else p for i, p in enumerate(parts)]
