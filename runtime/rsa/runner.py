"""The solve loop: each round one batch (or memory-sized waves), saved between rounds, metered as it goes.

Reproducibility does not depend on batching: every request's sampling seed and every prompt's
subset are derived from (seed, round, index), so waves, resumes and batch order give the same run.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from zaya_edge.errors import CheckpointError, ContextFullError, RequestError
from zaya_edge.runtime.types import BatchGenerator, BatchProgress, Completion, Request, SamplingParams

from .prompts import THINK_END, majority_vote, render_prompt
from .records import Candidate, Checkpoint, CheckpointStore, RoundRecord, SolveInterrupted, SolveResult

if TYPE_CHECKING:
    from .settings import MarkovianRSA

# Zyphra's serving proxy samples the single final aggregation like this.
SELECT_SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=40)
_SAMPLE_STREAM, _SUBSET_STREAM = 0, 1


@dataclasses.dataclass
class RoundProgress:
    """Where a round stands; `eta_s` is an upper bound (live sequences may stop before their budget)."""

    stage: int  # 0..T, T + 1 for the final aggregation sample
    rounds: int  # T
    kind: str
    total: int  # sequences in the round
    live: int
    finished: int
    generated_tokens: int
    elapsed_s: float
    eta_s: float
    done: bool = False

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run(
    settings: MarkovianRSA,
    engine: BatchGenerator,
    problem: str,
    on_progress: Callable[[RoundProgress], bool | None] | None = None,
    checkpoint: CheckpointStore | None = None,
) -> SolveResult:
    """MarkovianRSA.solve: rounds 0..T (resumed from `checkpoint`), then the selection."""
    if not problem.strip():
        raise RequestError("the problem is empty")
    if checkpoint is not None and not all(callable(getattr(checkpoint, m, None)) for m in ("load", "save")):
        raise RequestError(f"checkpoint must be a store with load() and save() (a CheckpointStore), "
                           f"got {type(checkpoint).__name__}")
    model = getattr(engine, "model_id", None)
    if checkpoint is not None and not (isinstance(model, str) and model):
        raise RequestError(f"a checkpoint needs an engine that names its model (BatchGenerator.model_id); "
                           f"{type(engine).__name__} has model_id {model!r}")
    return _Solve(settings, engine, problem, checkpoint).run(on_progress or (lambda p: None))


def _derive(seed: int, *path: int) -> int:
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


class _Solve:
    """One call of solve: the settings, the engine, the problem and where its rounds are saved."""

    def __init__(self, settings: MarkovianRSA, engine: BatchGenerator, problem: str, store: CheckpointStore | None):
        self.s, self.engine, self.problem, self.store = settings, engine, problem, store
        self.where = None if store is None else str(store)
        self.model = getattr(engine, "model_id", None)

    def run(self, progress) -> SolveResult:
        seed, rounds, selection = self._restore()
        resumed = saved = len(rounds)
        self._check_every_stage_fits()
        aggregate = self.s.select == "aggregate"
        try:
            for t in range(len(rounds), self.s.rounds + 1):
                rounds.append(self._stage(t, seed, rounds, progress))
                self._save(seed, rounds, selection)
                saved = len(rounds)
            if aggregate and selection is None:
                selection = self._stage(self.s.rounds + 1, seed, rounds, progress)
                self._save(seed, rounds, selection)
        except KeyboardInterrupt:
            raise SolveInterrupted(saved, self.where) from None
        return self._result(seed, rounds, selection if aggregate else None, resumed)

    # -- fitting the context and the memory budget

    def _fit(self, stage: int, length: int, label: str) -> int:
        """The one fit check: `length` prompt tokens + the stage's budget in the context and in max_memory.

        Run up front on each stage's longest possible prompt, and again on every prompt as built
        (word tails and re-encoded tails can exceed a bound counted in tokens). Returns the cache bytes.
        """
        budget, ctx, final = self.s.stage_budget(stage), self.engine.context_length, stage >= self.s.rounds
        if length + budget > ctx:
            which, argument = ("final budget", "final_budget") if final else ("budget", "budget")
            fix = f"lower tail, subset or {argument}" if stage else f"shorten the problem or lower {argument}"
            raise ContextFullError(f"{label} + {which} {budget} = {length + budget} tokens exceeds the engine's "
                                   f"context length {ctx}; {fix}")
        cost = self.engine.cache_bytes_per_sequence(length + budget)
        if self.s.max_memory is not None and cost > self.s.max_memory:
            raise ContextFullError(f"max memory {self.s.max_memory} B cannot hold one sequence of "
                                   f"{length + budget} tokens ({cost} B)")
        return cost

    def _check_every_stage_fits(self) -> None:
        """Refuse before generating anything what cannot fit some stage, even at its longest prompt."""
        s, codec = self.s, self.engine.codec
        first = len(codec.chat_prompt(self.problem))
        self._fit(0, first, f"the problem prompt ({first} tokens)")
        last = s.rounds + (s.select == "aggregate")
        if last == 0:
            return
        empty = len(codec.chat_prompt(render_prompt(s.prompt_template, self.problem, [""] * s.subset)))
        bound = empty + s.subset * s.tail
        label = f"the aggregation prompt (up to {bound} tokens: problem + template + {s.subset} x {s.tail} tail)"
        for t in range(1, last + 1):
            self._fit(t, bound, label)

    # -- one stage

    def _stage(self, t, seed, rounds, progress) -> RoundRecord:
        """Build the stage's prompts, generate them in waves, and turn completions into candidates."""
        kind = "rollout" if t == 0 else "select" if t > self.s.rounds else "aggregate"
        budget = self.s.stage_budget(t)
        subsets, prompts = self._prompts(t, kind, seed, rounds)
        sampling = SELECT_SAMPLING if kind == "select" else dict(temperature=self.s.temperature, top_p=self.s.top_p)
        requests = [Request(p, SamplingParams(**sampling, max_new_tokens=budget, seed=_derive(seed, _SAMPLE_STREAM, t, j)))
                    for j, p in enumerate(prompts)]
        costs = [self._fit(t, len(r.prompt_ids), f"round {t} prompt {j} ({len(r.prompt_ids)} tokens)")
                 for j, r in enumerate(requests)]
        start = time.perf_counter()
        completions, waves = self._generate(requests, costs, t, kind, budget, progress)
        wall = time.perf_counter() - start
        cands = [self._candidate(j, r, s, c) for j, (r, s, c) in enumerate(zip(requests, subsets, completions))]
        return RoundRecord(round=t, kind=kind, budget=budget, wall_s=wall, waves=waves, candidates=cands)

    def _prompts(self, t, kind, seed, rounds) -> tuple[list[list[int] | None], list[tuple[int, ...]]]:
        """(subsets, prompt ids): round 0 asks the problem; later stages show C tails of the round before."""
        codec, n = self.engine.codec, self.s.population
        if t == 0:
            return [None] * n, [tuple(codec.chat_prompt(self.problem))] * n  # identical: prefilled once, forked
        prev = rounds[-1].candidates
        subsets = [self._draw(seed, t, j, len(prev), chain=kind == "aggregate")
                   for j in range(1 if kind == "select" else n)]
        template = self.s.prompt_template
        prompts = [tuple(codec.chat_prompt(render_prompt(template, self.problem, [prev[i].tail for i in s])))
                   for s in subsets]
        return subsets, prompts

    def _draw(self, seed: int, t: int, j: int, n: int, chain: bool) -> list[int]:
        """Fresh C distinct indices of the previous round for prompt j; C = 1 continues chain j."""
        if chain and self.s.subset == 1:
            return [j]
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SUBSET_STREAM, t, j]))
        return [int(i) for i in rng.choice(n, size=self.s.subset, replace=False)]

    def _generate(self, requests, costs, t, kind, budget, progress) -> tuple[list[Completion], int]:
        waves = _waves(costs, self.s.max_memory)
        meter = _RoundMeter(t, self.s.rounds, kind, waves, budget, progress)
        out: list[Completion | None] = [None] * len(requests)
        for k, wave in enumerate(waves):
            start = time.perf_counter()
            got = self.engine.generate_batch([requests[i] for i in wave], meter.wave(k))
            if len(got) != len(wave):
                raise RuntimeError(f"engine returned {len(got)} completions for {len(wave)} requests")
            if any(c.finish_reason == "cancelled" for c in got):
                raise KeyboardInterrupt  # a cancelled round is incomplete: keep only what is saved
            meter.wave_done(got, time.perf_counter() - start)
            for i, c in zip(wave, got):
                out[i] = c
        meter.close()
        return out, len(waves)

    def _candidate(self, j: int, req: Request, subset, c: Completion) -> Candidate:
        codec = self.engine.codec
        body = c.tokens[:-1] if c.finish_reason in ("eos", "stop") and c.tokens else c.tokens
        carried, tail, length = "tail", *self._tail(body, c.text)
        if self.s.carry_answer_when_finished and THINK_END in c.text:
            section = c.text.rsplit(THINK_END, 1)[1].strip()
            if section:
                ids = codec.encode(section) if self.s.tail_unit == "tokens" else None
                carried, tail, length = "answer", *self._tail(ids, section)
        return Candidate(index=j, seed=req.params.seed, subset=subset, prompt_tokens=len(req.prompt_ids),
                         generated_tokens=len(c.tokens), finish_reason=c.finish_reason, text=c.text,
                         tail=tail, tail_length=length, carried=carried, answer=self.s.extractor(c.text))

    def _tail(self, ids, text) -> tuple[str, int]:
        """Last τ model tokens (decoded) or last τ whitespace words (original spacing kept)."""
        tau = self.s.tail
        if self.s.tail_unit == "tokens":
            kept = list(ids[-tau:])
            tail = self.engine.codec.decode(kept)
            if len(kept) < len(ids):  # a cut through a multi-byte character decodes to U+FFFD
                tail = tail.lstrip("\ufffd")
            return tail, len(kept)
        words = [m.start() for m in re.finditer(r"\S+", text)]
        if len(words) <= tau:
            return text.lstrip(), len(words)
        return text[words[-tau]:], tau

    def _result(self, seed, rounds, selection, resumed) -> SolveResult:
        answer, winner, votes = majority_vote(rounds[-1].candidates)
        chosen, by = (rounds[-1].round, winner.index), "vote"
        if selection is not None and selection.candidates[0].answer is not None:
            winner = selection.candidates[0]
            answer, chosen, by = winner.answer, (selection.round, 0), "aggregate"
        params = {**self.s.identity(seed), "select": self.s.select, "max_memory": self.s.max_memory,
                  "model": self.model}
        return SolveResult(answer=answer, trace=winner.text, winner=chosen, selected_by=by, votes=votes,
                           rounds=rounds, selection=selection, problem=self.problem, params=params,
                           resumed_rounds=resumed)

    # -- checkpoints

    def _restore(self) -> tuple[int, list[RoundRecord], RoundRecord | None]:
        """(seed, rounds, selection) from the checkpoint store, or a fresh start."""
        record = None if self.store is None else self.store.load()
        if record is None:
            return (self.s.seed if self.s.seed is not None else secrets.randbits(32)), [], None
        saved = Checkpoint.from_dict(record, self.s.extractor, self.where)
        if saved.problem != self.problem:
            raise CheckpointError(f"checkpoint {self.where} is for a different problem; use another checkpoint")
        if saved.model != self.model:
            raise CheckpointError(f"checkpoint {self.where} was made with another model ({_short(saved.model)} "
                                  f"there, {_short(self.model)} here); use that artifact or another checkpoint")
        seed = saved.seed if self.s.seed is None else self.s.seed
        diff = [f"{k} {saved.params.get(k)!r} there, {v!r} here"
                for k, v in self.s.identity(seed).items() if saved.params.get(k) != v]
        if diff:
            raise CheckpointError(f"checkpoint {self.where} was made with other settings ({'; '.join(diff)}); "
                                f"use the same settings or another checkpoint")
        saved.check_shape(self.s.population, self.s.rounds, self.where)
        return seed, saved.rounds, saved.selection

    def _save(self, seed, rounds, selection) -> None:
        if self.store is not None:
            self.store.save(Checkpoint(self.problem, self.s.identity(seed), self.model, rounds, selection).to_dict())


def _short(model_id: str) -> str:
    """A model id for a message: a manifest hash by its first 12 digits."""
    return repr(model_id if len(model_id) <= 16 else model_id[:12] + "...")


def _waves(costs: Sequence[int], max_memory: int | None) -> list[list[int]]:
    """Consecutive groups of requests whose caches (KV + state at prompt + budget) fit max_memory together."""
    if max_memory is None:
        return [list(range(len(costs)))]
    waves, used = [[]], 0
    for i, cost in enumerate(costs):
        if used + cost > max_memory:
            waves.append([])
            used = 0
        waves[-1].append(i)
        used += cost
    return waves


class _RoundMeter:
    """Folds the engine's per-wave BatchProgress into one per-round RoundProgress stream."""

    def __init__(self, stage, rounds, kind, waves, budget, on_progress):
        self.base = dict(stage=stage, rounds=rounds, kind=kind, total=sum(len(w) for w in waves))
        self.waves, self.budget, self.on_progress = [len(w) for w in waves], budget, on_progress
        self.done_tokens = self.done_finished = 0
        self.done_elapsed = 0.0

    def wave(self, k: int) -> Callable[[BatchProgress], bool | None]:
        steps = 0
        pending = sum(self.waves[k + 1 :])

        def step(p: BatchProgress):
            nonlocal steps
            steps += 1
            step_s = p.elapsed_s / steps
            left_steps = (self.budget - steps if p.live else 0) + self.budget * (len(self.waves) - k - 1)
            return self.on_progress(RoundProgress(
                **self.base, live=p.live + pending, finished=self.done_finished + p.finished,
                generated_tokens=self.done_tokens + p.generated_tokens,
                elapsed_s=self.done_elapsed + p.elapsed_s, eta_s=max(0.0, left_steps * step_s)))

        return step

    def wave_done(self, completions: Sequence[Completion], elapsed_s: float) -> None:
        self.done_tokens += sum(len(c.tokens) for c in completions)
        self.done_finished += len(completions)
        self.done_elapsed += elapsed_s

    def close(self) -> None:
        self.on_progress(RoundProgress(
            **self.base, live=0, finished=self.done_finished, generated_tokens=self.done_tokens,
            elapsed_s=self.done_elapsed, eta_s=0.0, done=True))
