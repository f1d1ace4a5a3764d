"""Task accuracy of an artifact: `zaya-edge eval ARTIFACT --task tiny-arith [--strategy single|rsa]`.

Random test models only show that numbers match; accuracy on a task the model was trained for
(the tiny reasoner, examples/tiny-reasoner) shows what int4 costs and what Markovian RSA buys.
Problems come from a fixed held-out set (never trained on); every problem's sampling seed is
derived from (seed, problem index), so a result does not depend on batching or the limit.
Torch-free: the runtime Engine and MarkovianRSA only.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from zaya_edge.app import tiny_arith
from zaya_edge.errors import RequestError
from zaya_edge.runtime.rsa import MarkovianRSA, extract_boxed
from zaya_edge.runtime.types import Request, SamplingParams

TASKS = ("tiny-arith",)
STRATEGIES = ("single", "rsa")
GREEDY = 0.0  # single sampling's default temperature
_CHUNK = 64  # single-sampling requests handed to the engine at once (progress granularity)


@dataclasses.dataclass
class ProblemResult:
    index: int
    problem: str
    expected: str
    answer: str | None
    correct: bool
    generated_tokens: int
    population_correct: float | None = None  # rsa: share of the last round's candidates that are right


@dataclasses.dataclass
class EvalReport:
    task: str
    strategy: str
    settings: dict
    results: list[ProblemResult]
    wall_s: float

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.results)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def generated_tokens(self) -> int:
        return sum(r.generated_tokens for r in self.results)

    @property
    def population_accuracy(self) -> float | None:
        """The report's metric for RSA: mean correctness over the final population."""
        vals = [r.population_correct for r in self.results if r.population_correct is not None]
        return sum(vals) / len(vals) if vals else None

    def summary(self) -> str:
        s = self.settings
        how = (f"temperature {s['temperature']:g}" if self.strategy == "single" else
               f"N={s['population']} C={s['subset']} T={s['rounds']} β={s['budget']} τ={s['tail']} "
               f"temperature {s['temperature']:g}, {s['select']}")
        line = f"{self.task} {self.strategy} ({how}, seed {s['seed']}): {self.correct}/{self.total} = {100 * self.accuracy:.1f}%"
        if self.population_accuracy is not None:
            line += f"; final-population mean {100 * self.population_accuracy:.1f}%"
        return line + f"; {self.generated_tokens} tokens in {self.wall_s:.1f} s"

    def to_dict(self) -> dict:
        """The JSON-able report `eval --json` writes."""
        return {"task": self.task, "strategy": self.strategy, "settings": self.settings,
                "correct": self.correct, "total": self.total, "accuracy": self.accuracy,
                "population_accuracy": self.population_accuracy,
                "generated_tokens": self.generated_tokens, "wall_s": round(self.wall_s, 3),
                "results": [dataclasses.asdict(r) for r in self.results]}


def problem_seed(seed: int, index: int) -> int:
    """The one (eval seed, problem index) -> sampling seed rule, wherever the problem is solved."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def check_task(task: str) -> None:
    if task not in TASKS:
        raise RequestError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def check_limit(limit: int | None) -> None:
    if limit is not None and not 1 <= limit <= tiny_arith.HELD_OUT_SIZE:
        raise RequestError(f"limit must be 1..{tiny_arith.HELD_OUT_SIZE} (the held-out set's size), got {limit}")


def rsa_settings(strategy: MarkovianRSA, seed: int) -> dict:
    """The settings an RSA EvalReport records."""
    return dict(population=strategy.population, subset=strategy.subset, rounds=strategy.rounds,
                budget=strategy.budget, tail=strategy.tail, temperature=strategy.temperature,
                select=strategy.select, seed=seed)


def score_solve(index: int, problem: tiny_arith.Problem, result) -> ProblemResult:
    """A solved problem's result: the answer's correctness and the final population's share."""
    last = result.rounds[-1].candidates
    share = sum(tiny_arith.is_correct(c.answer, problem) for c in last) / len(last)
    return ProblemResult(index, problem.text, problem.answer, result.answer,
                         tiny_arith.is_correct(result.answer, problem), result.generated_tokens,
                         population_correct=share)


def task_rsa(task: str = "tiny-arith", **settings) -> MarkovianRSA:
    """Markovian RSA at the task's budget (β) and tail (τ), unless `settings` give them."""
    check_task(task)
    return MarkovianRSA(**{"budget": tiny_arith.BUDGET, "tail": tiny_arith.TAIL, **settings})


def evaluate(
    engine,
    task: str = "tiny-arith",
    strategy: MarkovianRSA | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    on_problem: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Accuracy of `engine` on the task's held-out problems (the first `limit` of them).

    strategy None: one sample per problem at `temperature` (default 0 = greedy) and `max_new_tokens`
    (default the task's budget). A MarkovianRSA: one solve per problem with its own settings; its
    seed is replaced by one derived from `seed` and the problem's index. `on_problem(done, total)`
    is called as problems finish.
    """
    check_task(task)
    check_limit(limit)
    if strategy is not None and not isinstance(strategy, MarkovianRSA):
        raise RequestError(f"strategy must be a MarkovianRSA, or None for single sampling; got {strategy!r}")
    if strategy is not None and (temperature is not None or max_new_tokens is not None):
        raise RequestError("temperature and max_new_tokens are single sampling's; "
                           "a MarkovianRSA strategy carries its own temperature and budget")
    problems = tiny_arith.held_out_set(limit)
    progress = on_problem or (lambda done, total: None)
    start = time.perf_counter()
    if strategy is None:
        params = SamplingParams(temperature=GREEDY if temperature is None else temperature,
                                max_new_tokens=max_new_tokens or tiny_arith.BUDGET)
        settings = dict(temperature=params.temperature, max_new_tokens=params.max_new_tokens, seed=seed)
        results = _single(engine, problems, params, seed, progress)
    else:
        settings = rsa_settings(strategy, seed)
        results = _rsa(engine, problems, strategy, seed, progress)
    name = "single" if strategy is None else "rsa"
    return EvalReport(task, name, settings, results, time.perf_counter() - start)


def _single(engine, problems: Sequence[tiny_arith.Problem], params: SamplingParams, seed: int, progress) -> list[ProblemResult]:
    codec, out = engine.codec, []
    for lo in range(0, len(problems), _CHUNK):
        chunk = problems[lo : lo + _CHUNK]
        requests = [Request(tuple(codec.chat_prompt(p.text)), dataclasses.replace(params, seed=problem_seed(seed, lo + i)))
                    for i, p in enumerate(chunk)]
        for i, (p, c) in enumerate(zip(chunk, engine.generate_batch(requests))):
            answer = extract_boxed(c.text)
            out.append(ProblemResult(lo + i, p.text, p.answer, answer, tiny_arith.is_correct(answer, p), len(c.tokens)))
        progress(len(out), len(problems))
    return out


def _rsa(engine, problems: Sequence[tiny_arith.Problem], rsa: MarkovianRSA, seed: int, progress) -> list[ProblemResult]:
    out = []
    for i, p in enumerate(problems):
        result = dataclasses.replace(rsa, seed=problem_seed(seed, i)).solve(engine, p.text)
        out.append(score_solve(i, p, result))
        progress(len(out), len(problems))
    return out
