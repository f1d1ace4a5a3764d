"""One request's generation state: its sampler, its stop rules and the text it streams.

    logits ─ sample ─ token ─┬─ stop token / EOS / max_new_tokens ─ finish_reason
                             └─ StreamDecoder ─ text ─ stop strings ─ StepEvent.text

Knows nothing of batches or rows: whoever runs the model sets `logits`, `step()` consumes them.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from .sampling import make_rng, sample
from .tokenizer import StreamDecoder, Tokenizer
from .types import Completion, Request


@dataclasses.dataclass
class StepEvent:
    """What one sequence did in one step."""

    token: int  # -1 when cancelled
    text: str  # new text (may be empty while a character's bytes are incomplete)
    finish_reason: str | None


class SequenceState:
    """The sampler, stop rules and streamed text of request number `index`."""

    def __init__(self, index: int, request: Request, eos_token_ids: Iterable[int], tokenizer: Tokenizer | None):
        self.index = index
        self.request = request
        self.params = request.params
        self.rng = make_rng(request.params.seed)
        self.tokens: list[int] = []
        penalised = request.params.repetition_penalty != 1.0
        self.seen = set(request.prompt_ids) if penalised else set()  # tokens the penalty applies to
        self._seen_ids = np.fromiter(self.seen, np.int64, len(self.seen))  # the same, as the sampler takes them
        self.stop_ids = set(request.params.stop_token_ids)
        if not request.params.ignore_eos:
            self.stop_ids |= set(eos_token_ids)
        self.decoder = StreamDecoder(tokenizer) if tokenizer else None
        self.text = ""
        self._emitted = 0  # characters of text already streamed
        self.finish_reason: str | None = None
        self.logits: np.ndarray | None = None

    def step(self) -> StepEvent:
        """Sample from the current logits, update text and stop state."""
        token = sample(self.logits, self.params, self.rng, self._seen_ids)
        self.logits = None  # consumed: the token must be fed before sampling again
        self.tokens.append(token)
        if self.params.repetition_penalty != 1.0:
            if token not in self.seen:  # grown per new token, not rebuilt from the set every step
                self.seen.add(token)
                self._seen_ids = np.append(self._seen_ids, token)
        if token in self.stop_ids:
            self.finish_reason = "stop" if token in self.params.stop_token_ids else "eos"
            if self.decoder is not None:
                self._add_text(self.decoder.flush())
        elif self.decoder is not None:
            self._add_text(self.decoder.push(token))
        if self.finish_reason is None and len(self.tokens) >= self.params.max_new_tokens:
            self.finish_reason = "length"
            if self.decoder is not None:
                self._add_text(self.decoder.flush())
        return StepEvent(token, self._emit(), self.finish_reason)

    def _add_text(self, delta: str) -> None:
        """Append decoded text; a stop string ends the sequence and is cut off."""
        if not delta:
            return
        before = len(self.text)
        self.text += delta
        if self.params.stop_strings:
            window = max(0, before - max(len(s) for s in self.params.stop_strings) + 1)
            hits = [i for s in self.params.stop_strings if (i := self.text.find(s, window)) >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.finish_reason = "stop"

    def _emit(self) -> str:
        """New text that can be shown: hold back a tail that may still become a stop string."""
        end = len(self.text)
        if self.finish_reason is None and self.params.stop_strings:
            for s in self.params.stop_strings:
                for k in range(min(len(s) - 1, end - self._emitted), 0, -1):
                    if self.text.endswith(s[:k]):
                        end = min(end, len(self.text) - k)
                        break
        out = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return out

    def cancel(self) -> StepEvent:
        self.finish_reason = "cancelled"
        return StepEvent(-1, self._emit(), "cancelled")

    def completion(self) -> Completion:
        return Completion(list(self.tokens), self.text, self.finish_reason or "cancelled", len(self.request.prompt_ids))
