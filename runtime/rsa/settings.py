"""The settings of a Markovian RSA run: validated once, when they are made, then never changed."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

from zaya_edge.errors import RequestError
from zaya_edge.runtime.types import BatchGenerator, check_seed, check_temperature, check_top_p

from .prompts import check_template, default_template, extract_boxed
from .records import CheckpointStore, SolveResult
from .runner import RoundProgress, run

K = 1024
# The reference table (markovian-rsa.md): N, C, T, β, τ, B_final. deploy/edge keep the report's 40K final budget.
PRESETS: dict[str, dict] = {
    "report": dict(population=16, subset=4, rounds=2, budget=40 * K, tail=4 * K, final_budget=40 * K),
    "deploy": dict(population=16, subset=4, rounds=2, budget=16 * K, tail=4 * K, final_budget=40 * K),
    "edge": dict(population=8, subset=4, rounds=2, budget=8 * K, tail=4 * K, final_budget=40 * K),
}
TAIL_UNITS = ("tokens", "words")  # words: whitespace words, as Zyphra's proxy counts
SELECTIONS = ("vote", "aggregate")  # aggregate: one final aggregation sample over the last round


@dataclasses.dataclass(frozen=True, kw_only=True)
class MarkovianRSA:
    """Markovian RSA over any BatchGenerator (markovian-rsa.md). Defaults are the deploy point.

    T = 0 is plain parallel sampling; C = 1 is Delethink-style bounded self-continuation (candidate
    j continues its own chain's tail with the refine template); τ = β carries whole chains (full RSA).
    `final_budget` (B_final) bounds the last round, round T; it defaults to `budget`.
    `max_memory` (bytes) splits a round into waves; it never changes the result.
    """

    population: int = 16
    subset: int = 4
    rounds: int = 2
    budget: int = 16 * K
    tail: int = 4 * K
    final_budget: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    tail_unit: str = "tokens"  # TAIL_UNITS
    carry_answer_when_finished: bool = False  # PaCoRe hybrid: finished -> carry the answer section
    select: str = "vote"  # SELECTIONS
    template: str | None = None  # template text; None = the shipped aggregate.txt / refine.txt
    extractor: Callable[[str], str | None] = dataclasses.field(default=extract_boxed, compare=False)
    seed: int | None = None
    max_memory: int | None = None  # bytes of cache for live sequences

    def __post_init__(self):
        checks = [
            (self.population >= 1, f"population must be >= 1, got {self.population}"),
            (self.subset >= 1, f"subset (C) must be >= 1, got {self.subset}"),
            (self.subset <= self.population, f"subset (C={self.subset}) cannot exceed population (N={self.population})"),
            (self.rounds >= 0, f"rounds (T) must be >= 0, got {self.rounds}"),
            (self.budget >= 1, f"budget must be >= 1, got {self.budget}"),
            (self.final_budget is None or self.final_budget >= 1, f"final_budget must be >= 1, got {self.final_budget}"),
            (self.tail >= 1, f"tail (τ) must be >= 1, got {self.tail}"),
            (self.tail <= self.budget, f"tail (τ={self.tail}) cannot exceed the budget (β={self.budget})"),
            (self.tail_unit in TAIL_UNITS, f"tail_unit must be one of {', '.join(TAIL_UNITS)}, got {self.tail_unit!r}"),
            (self.select in SELECTIONS, f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}"),
            (self.max_memory is None or _is_byte_count(self.max_memory),
             f"max_memory must be a positive number of bytes, got {self.max_memory!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RequestError(message)
        check_temperature(self.temperature)
        check_top_p(self.top_p)
        check_seed(self.seed)
        if self.template is not None:
            check_template(self.template, "text")

    @classmethod
    def preset(cls, name: str, **overrides) -> MarkovianRSA:
        if name not in PRESETS:
            raise RequestError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def prompt_template(self) -> str:
        return self.template if self.template is not None else default_template(self.subset)

    def stage_budget(self, stage: int) -> int:
        final = self.budget if self.final_budget is None else self.final_budget
        return final if stage >= self.rounds else self.budget

    def identity(self, seed: int) -> dict:
        """What a checkpoint must agree on to be resumed (selection mode and waves may change)."""
        return {
            "population": self.population, "subset": self.subset, "rounds": self.rounds,
            "budget": self.budget, "tail": self.tail, "final_budget": self.stage_budget(self.rounds),
            "temperature": self.temperature, "top_p": self.top_p, "tail_unit": self.tail_unit,
            "carry_answer_when_finished": self.carry_answer_when_finished,
            "template_sha256": hashlib.sha256(self.prompt_template.encode()).hexdigest(), "seed": seed,
        }

    def solve(
        self,
        engine: BatchGenerator,
        problem: str,
        on_progress: Callable[[RoundProgress], bool | None] | None = None,
        checkpoint: CheckpointStore | None = None,
    ) -> SolveResult:
        """Run rounds 0..T (resuming from what `checkpoint` holds), then select the answer.

        Saves to the checkpoint store after every completed round. Ctrl-C, or `on_progress`
        returning False, raises SolveInterrupted once what is complete is saved.
        """
        return run(self, engine, problem, on_progress, checkpoint)


def _is_byte_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
