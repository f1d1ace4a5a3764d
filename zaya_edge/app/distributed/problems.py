"""One Markovian RSA problem of an eval, solved anywhere with the same result as `evaluate` gives.

`evaluate` solves its problems in a loop; a Ray actor solves one at a time, maybe resuming
another actor's checkpoint. Both must derive the problem's seed from (seed, index), score it
and record the settings the same way, so that step lives here, built from eval's own pieces.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from zaya_edge.app import tiny_arith
from zaya_edge.app.eval import ProblemResult, check_limit, check_task, problem_seed, rsa_settings, score_solve
from zaya_edge.errors import RequestError
from zaya_edge.runtime.rsa import CheckpointStore, MarkovianRSA, RoundProgress

__all__ = ["ResumableProblemResult", "rsa_problems", "rsa_settings", "solve_problem"]


@dataclasses.dataclass
class ResumableProblemResult(ProblemResult):
    """A ProblemResult that says how many rounds came from its checkpoint (a lost actor, a resumed run)."""

    resumed_rounds: int = 0


def rsa_problems(task: str, limit: int | None, strategy) -> list[tiny_arith.Problem]:
    """The held-out problems an RSA eval of `task` runs, after the checks `evaluate` makes."""
    check_task(task)
    check_limit(limit)
    if not isinstance(strategy, MarkovianRSA):
        raise RequestError(f"a distributed eval runs Markovian RSA: strategy must be a MarkovianRSA, got {strategy!r}")
    return tiny_arith.held_out_set(limit)


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
    scored = score_solve(index, problem, result)
    return ResumableProblemResult(**dataclasses.asdict(scored), resumed_rounds=result.resumed_rounds)
