"""One Markovian RSA problem of an eval, solved anywhere with the same result as `evaluate` gives.

`evaluate` solves its problems in a loop; a Ray actor solves one at a time, maybe resuming
another actor's checkpoint. Both must derive the problem's seed from (seed, index), score it
and record the settings the same way, so that step lives here, built from eval's own pieces.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from zaya_edge.app import tiny_arith
from zaya_edge.app.eval import TASKS, ProblemResult
from zaya_edge.app.eval import _derive as problem_seed  # the one (seed, index) -> seed rule
from zaya_edge.errors import RequestError
from zaya_edge.runtime.rsa import CheckpointStore, MarkovianRSA, RoundProgress


@dataclasses.dataclass
class ResumableProblemResult(ProblemResult):
    """A ProblemResult that says how many rounds came from its checkpoint (a lost actor, a resumed run)."""

    resumed_rounds: int = 0


def rsa_problems(task: str, limit: int | None, strategy) -> list[tiny_arith.Problem]:
    """The held-out problems an RSA eval of `task` runs, after the checks `evaluate` makes."""
    if task not in TASKS:
        raise RequestError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if limit is not None and not 1 <= limit <= tiny_arith.HELD_OUT_SIZE:
        raise RequestError(f"limit must be 1..{tiny_arith.HELD_OUT_SIZE} (the held-out set's size), got {limit}")
    if not isinstance(strategy, MarkovianRSA):
        raise RequestError(f"a distributed eval runs Markovian RSA: strategy must be a MarkovianRSA, got {strategy!r}")
    return tiny_arith.held_out_set(limit)


def rsa_settings(strategy: MarkovianRSA, seed: int) -> dict:
    """The settings an RSA EvalReport records."""
    return dict(population=strategy.population, subset=strategy.subset, rounds=strategy.rounds,
                budget=strategy.budget, tail=strategy.tail, temperature=strategy.temperature,
                select=strategy.select, seed=seed)


def solve_problem(
    engine,
    index: int,
    problem: tiny_arith.Problem,
    strategy: MarkovianRSA,
    seed: int,
    checkpoint: CheckpointStore | None = None,
    on_progress: Callable[[RoundProgress], bool | None] | None = None,
) -> ResumableProblemResult:
    """Problem `index` of the eval at `seed`, resumed from `checkpoint` if it holds completed rounds."""
    rsa = dataclasses.replace(strategy, seed=problem_seed(seed, index))
    result = rsa.solve(engine, problem.text, on_progress=on_progress, checkpoint=checkpoint)
    last = result.rounds[-1].candidates
    share = sum(tiny_arith.is_correct(c.answer, problem) for c in last) / len(last)
    return ResumableProblemResult(index, problem.text, problem.answer, result.answer,
                                  tiny_arith.is_correct(result.answer, problem), result.generated_tokens,
                                  population_correct=share, resumed_rounds=result.resumed_rounds)
