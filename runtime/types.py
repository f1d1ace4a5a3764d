"""Plain data the runtime's callers hand in and get back (no onnxruntime here).

Markovian RSA, the CLI and apps all speak to the engine through these types, so a scripted
fake engine in tests can stand in for the real one.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Callable, Protocol, Sequence

from zaya_edge.errors import RequestError


def check_temperature(value: float) -> float:
    """One rule for every sampler setting that carries a temperature (0 = greedy)."""
    if not (0 <= value < float("inf")):
        raise RequestError(f"temperature must be a finite number >= 0, got {value}")
    return value


SEED_LIMIT = 2**64  # a seed is in [0, 2**64): what the samplers' SeedSequence is fed


def check_seed(value: int | None, name: str = "seed") -> int | None:
    """One rule for every seed a caller gives (None = draw one)."""
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if value is not None and (not integral or not 0 <= value < SEED_LIMIT):
        raise RequestError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    return value


def check_top_p(value: float) -> float:
    """One rule for every sampler setting that carries a nucleus mass."""
    if not (0 < value <= 1):
        raise RequestError(f"top_p must be in (0, 1], got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request. temperature 0 = greedy."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()  # besides the model's EOS
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # keep going past the model's end token (benchmarks, parity tests)

    def __post_init__(self):
        check_temperature(self.temperature)
        check_top_p(self.top_p)
        if self.top_k < 0:
            raise RequestError(f"top_k must be >= 0, got {self.top_k}")
        if not (0 <= self.min_p < 1):
            raise RequestError(f"min_p must be in [0, 1), got {self.min_p}")
        if not (self.repetition_penalty > 0):
            raise RequestError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise RequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check_seed(self.seed)


@dataclasses.dataclass(frozen=True)
class Request:
    """One sequence to generate: prompt token ids (already chat-formatted if wanted)."""

    prompt_ids: tuple[int, ...]
    params: SamplingParams = SamplingParams()


@dataclasses.dataclass
class Completion:
    tokens: list[int]  # generated tokens only (a stop/EOS token that ended it is included)
    text: str  # decoded generated text (stop string, if any, cut off)
    finish_reason: str  # "eos" | "stop" | "length" | "cancelled"
    prompt_tokens: int


@dataclasses.dataclass
class BatchProgress:
    """Reported after every decode step of a batch."""

    live: int  # sequences still generating
    finished: int
    generated_tokens: int  # over the whole batch so far
    elapsed_s: float


class TextCodec(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def chat_prompt(self, user_message: str) -> list[int]:
        """Token ids of a one-turn chat (ChatML), ready for the assistant to answer."""
        ...


class BatchGenerator(Protocol):
    """What Markovian RSA needs from an engine.

    `generate_batch` runs all requests together (one session call per decode step for the
    whole batch); identical prompts are prefilled once and their cache forked. Finished
    sequences leave the batch. `on_progress` is called after each step; returning False
    cancels the remaining sequences (finish_reason "cancelled").
    """

    codec: TextCodec
    context_length: int
    model_id: str  # names the model (an artifact: its manifest's sha256); a checkpoint resumes only on it

    def generate_batch(
        self,
        requests: Sequence[Request],
        on_progress: Callable[[BatchProgress], bool | None] | None = None,
    ) -> list[Completion]: ...

    def cache_bytes_per_sequence(self, length: int) -> int:
        """Memory one live sequence of `length` tokens costs (KV + fixed CCA state)."""
        ...
