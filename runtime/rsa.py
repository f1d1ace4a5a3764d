"""Markovian RSA: recursive self-aggregation over bounded tails, as a strategy driving a BatchGenerator.

A population of N candidates is regenerated T times; each new candidate sees C tails (last τ
generated tokens) of the previous round only, so every prompt stays ≤ |problem| + C·τ + template
however long the model thinks. The population is the batch: one `generate_batch` per round (or
per memory-sized wave). Method and defaults: shared/reference/markovian-rsa.md (ZAYA1-8B report,
section VI).

Reproducibility does not depend on batching: every request's sampling seed and every prompt's
subset are derived from (seed, round, index), so waves, resumes and batch order give the same run.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.resources
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime.types import BatchGenerator, BatchProgress, Completion, Request, SamplingParams

__all__ = [
    "PRESETS", "MarkovianRSA", "SolveResult", "Candidate", "RoundRecord", "RoundProgress",
    "ProgressBar", "SolveInterrupted", "extract_boxed", "majority_vote", "read_template",
    "default_template", "render_prompt", "parse_memory", "write_json_atomic",
]

K = 1024
# The reference table (markovian-rsa.md): N, C, T, β, τ, B_final. deploy/edge keep the report's 40K final budget.
PRESETS: dict[str, dict] = {
    "report": dict(population=16, subset=4, rounds=2, budget=40 * K, tail=4 * K, final_budget=40 * K),
    "deploy": dict(population=16, subset=4, rounds=2, budget=16 * K, tail=4 * K, final_budget=40 * K),
    "edge": dict(population=8, subset=4, rounds=2, budget=8 * K, tail=4 * K, final_budget=40 * K),
}
# Zyphra's serving proxy samples the single final aggregation like this.
SELECT_SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=40)
THINK_END = "</think>"
_SAMPLE_STREAM, _SUBSET_STREAM = 0, 1
_CHECKPOINT_FORMAT, _CHECKPOINT_VERSION = "zaya-edge-rsa-checkpoint", 1


# ---------------------------------------------------------------- prompts and answers


def default_template(subset: int) -> str:
    """The shipped template: aggregate.txt, or refine.txt when one tail is shown (C = 1)."""
    name = "refine.txt" if subset == 1 else "aggregate.txt"
    return importlib.resources.files("zaya_edge.runtime").joinpath("templates", name).read_text("utf-8").rstrip()


def read_template(path: str | os.PathLike) -> str:
    """Read a user's aggregation template; it must contain {problem} and {candidates}."""
    try:
        text = Path(path).read_text("utf-8").rstrip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ZayaEdgeError(f"cannot read template {path}: {exc}") from None
    _check_template(text, str(path))
    return text


def _check_template(text: str, where: str) -> None:
    missing = [p for p in ("{problem}", "{candidates}") if p not in text]
    if missing:
        raise ZayaEdgeError(f"template {where} lacks the placeholder(s) {', '.join(missing)}")


_PLACEHOLDER = re.compile(r"\{(problem|candidates)\}")


def render_prompt(template: str, problem: str, carried: Sequence[str]) -> str:
    """Fill the template in one pass, so braces inside the problem or tails are never re-expanded."""
    blocks = "\n\n".join(f"---- Solution {i} ----\n{text}" for i, text in enumerate(carried, 1))
    values = {"problem": problem, "candidates": blocks}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def extract_boxed(text: str) -> str | None:
    r"""The content of the last \boxed{...} (nested braces balanced), or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j].strip()
        start = text.rfind("\\boxed{", 0, start)  # unbalanced (cut off): try an earlier one
    return None


def _vote_key(answer: str) -> str:
    return "".join(answer.split()).strip("$")


def majority_vote(candidates: Sequence[Candidate]) -> tuple[str | None, Candidate, dict[str, int]]:
    """Most common extracted answer; ties go to the answer more candidates *finished* with (EOS, not budget).

    Returns (answer, winning candidate, votes). The winner is the first finished candidate holding
    the answer (else the first holding it); with no answers at all, the first finished candidate.
    """
    groups: dict[str, list[Candidate]] = collections.defaultdict(list)
    for c in candidates:
        if c.answer is not None:
            groups[_vote_key(c.answer)].append(c)
    if not groups:
        return None, next((c for c in candidates if c.finished), candidates[0]), {}
    best = max(groups.values(), key=lambda g: (len(g), sum(c.finished for c in g), -g[0].index))
    winner = next((c for c in best if c.finished), best[0])
    votes = {g[0].answer: len(g) for g in sorted(groups.values(), key=len, reverse=True)}
    return winner.answer, winner, votes


# ---------------------------------------------------------------- records


@dataclasses.dataclass
class Candidate:
    """One rollout of a round, and what it passes on to the next one."""

    index: int
    seed: int
    subset: list[int] | None  # indices into the previous round shown in its prompt (None in round 0)
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str
    text: str
    tail: str  # what the next round sees: the last τ units, or the answer section (carry_answer)
    tail_length: int  # in tail units
    carried: str  # "tail" | "answer"
    answer: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason in ("eos", "stop")

    def report(self, text: bool = False) -> dict:
        out = dataclasses.asdict(self)
        if not text:
            del out["text"]
        out["finished_thinking"] = THINK_END in self.text
        return out


@dataclasses.dataclass
class RoundRecord:
    round: int
    kind: str  # "rollout" (round 0) | "aggregate" | "select" (the final aggregation sample)
    budget: int
    wall_s: float
    waves: int
    candidates: list[Candidate]

    @property
    def generated_tokens(self) -> int:
        return sum(c.generated_tokens for c in self.candidates)

    def report(self, text: bool = False) -> dict:
        return {
            "round": self.round, "kind": self.kind, "budget": self.budget, "waves": self.waves,
            "generated_tokens": self.generated_tokens, "wall_s": round(self.wall_s, 3),
            "tokens_per_s": round(self.generated_tokens / self.wall_s, 2) if self.wall_s > 0 else None,
            "candidates": [c.report(text) for c in self.candidates],
        }

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "candidates": [dataclasses.asdict(c) for c in self.candidates]}

    @classmethod
    def from_json(cls, d: dict, extractor: Callable[[str], str | None]) -> RoundRecord:
        cands = [Candidate(**{**c, "answer": extractor(c["text"])}) for c in d["candidates"]]
        return cls(**{**d, "candidates": cands})


@dataclasses.dataclass
class SolveResult:
    answer: str | None
    trace: str  # the winning candidate's full generated text
    winner: tuple[int, int]  # (round, index); round T + 1 is the final aggregation sample
    selected_by: str  # "vote" | "aggregate"
    votes: dict[str, int]  # over the last round
    rounds: list[RoundRecord]
    selection: RoundRecord | None
    problem: str
    params: dict
    resumed_rounds: int  # rounds restored from a checkpoint rather than generated in this call

    @property
    def stages(self) -> list[RoundRecord]:
        return self.rounds + ([self.selection] if self.selection else [])

    @property
    def generated_tokens(self) -> int:
        return sum(r.generated_tokens for r in self.stages)

    @property
    def wall_s(self) -> float:
        return sum(r.wall_s for r in self.stages)

    @property
    def tokens_per_s(self) -> float | None:
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else None

    def report(self, text: bool = False) -> dict:
        """JSON-able audit of the run; `text=True` adds every candidate's full generated text."""
        return {
            "answer": self.answer, "selected_by": self.selected_by, "votes": self.votes,
            "winner": {"round": self.winner[0], "index": self.winner[1]}, "trace": self.trace,
            "problem": self.problem, "params": self.params, "resumed_rounds": self.resumed_rounds,
            "generated_tokens": self.generated_tokens, "wall_s": round(self.wall_s, 3),
            "tokens_per_s": round(self.tokens_per_s, 2) if self.tokens_per_s else None,
            "rounds": [r.report(text) for r in self.rounds],
            "selection": self.selection.report(text) if self.selection else None,
        }


class SolveInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a cancelling on_progress) during a solve; completed rounds are in the checkpoint."""

    def __init__(self, completed_rounds: int, checkpoint: str | None):
        self.completed_rounds, self.checkpoint = completed_rounds, checkpoint
        where = (f"saved in {checkpoint}; re-run the same command to resume"
                 if checkpoint else "pass --checkpoint FILE to make a solve resumable")
        super().__init__(f"interrupted after {completed_rounds} completed round(s); {where}")


# ---------------------------------------------------------------- progress


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


class ProgressBar:
    """A tqdm bar per round: sequences done, live, tokens, tokens/s and an upper-bound ETA."""

    def __init__(self, file=None):
        self.file, self.bar, self.stage = file, None, None

    def __call__(self, p: RoundProgress) -> None:
        from tqdm import tqdm

        if p.stage != self.stage:
            self.close()
            label = "select" if p.kind == "select" else f"round {p.stage}/{p.rounds}"
            self.bar = tqdm(total=p.total, desc=label, unit="seq", file=self.file, leave=True,
                            bar_format="{desc}: {n}/{total} seq |{bar:16}|{postfix}")
            self.stage = p.stage
        eta = time.strftime("%H:%M:%S", time.gmtime(p.eta_s))
        self.bar.set_postfix_str(
            f"live {p.live}, {p.generated_tokens} tok, {p.tokens_per_s:.1f} tok/s, ETA <= {eta}", refresh=False)
        self.bar.update(p.finished - self.bar.n)  # redraws at most every mininterval
        if p.done:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.stage = None, None


# ---------------------------------------------------------------- the strategy


def parse_memory(value: int | str) -> int:
    """'6GB' / '6GiB' / '512MB' / bytes -> bytes (KB, MB, GB decimal; KiB, MiB, GiB binary)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?)B?\s*", value, re.IGNORECASE)
    if not m:
        raise ZayaEdgeError(f"cannot read memory size {value!r} (use e.g. 6GB, 512MiB or a byte count)")
    power = "KMGT".find(m.group(2).upper()) + 1 if m.group(2) else 0
    return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** power)


def _derive(seed: int, *path: int) -> int:
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True, kw_only=True)
class MarkovianRSA:
    """Markovian RSA over any BatchGenerator (markovian-rsa.md). Defaults are the deploy point.

    T = 0 is plain parallel sampling; C = 1 is Delethink-style bounded self-continuation (candidate
    j continues its own chain's tail with the refine template); τ = β carries whole chains (full RSA).
    `final_budget` (B_final) bounds the last round, round T; it defaults to `budget`.
    `max_memory` (bytes or '6GB') splits a round into waves; it never changes the result.
    """

    population: int = 16
    subset: int = 4
    rounds: int = 2
    budget: int = 16 * K
    tail: int = 4 * K
    final_budget: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    tail_unit: str = "tokens"  # or "words": whitespace words, as Zyphra's proxy counts
    carry_answer_when_finished: bool = False  # PaCoRe hybrid: finished -> carry the answer section
    select: str = "vote"  # or "aggregate": one final aggregation sample over the last round
    template: str | None = None  # template text; None = the shipped aggregate.txt / refine.txt
    extractor: Callable[[str], str | None] = dataclasses.field(default=extract_boxed, compare=False)
    seed: int | None = None
    max_memory: int | str | None = None

    def __post_init__(self):
        checks = [
            (self.population >= 1, f"population must be >= 1, got {self.population}"),
            (self.subset >= 1, f"subset (C) must be >= 1, got {self.subset}"),
            (self.subset <= self.population, f"subset (C={self.subset}) cannot exceed population (N={self.population})"),
            (self.rounds >= 0, f"rounds (T) must be >= 0, got {self.rounds}"),
            (self.budget >= 1, f"budget must be >= 1, got {self.budget}"),
            (self.final_budget is None or self.final_budget >= 1, f"final budget must be >= 1, got {self.final_budget}"),
            (self.tail >= 1, f"tail (τ) must be >= 1, got {self.tail}"),
            (self.tail <= self.budget, f"tail (τ={self.tail}) cannot exceed the budget (β={self.budget})"),
            (self.tail_unit in ("tokens", "words"), f"tail_unit must be 'tokens' or 'words', got {self.tail_unit!r}"),
            (self.select in ("vote", "aggregate"), f"select must be 'vote' or 'aggregate', got {self.select!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ZayaEdgeError(message)
        SamplingParams(temperature=self.temperature, top_p=self.top_p)  # validates them
        if self.template is not None:
            _check_template(self.template, "text")
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", parse_memory(self.max_memory))
            if self.max_memory <= 0:
                raise ZayaEdgeError(f"max_memory must be positive, got {self.max_memory}")

    @classmethod
    def preset(cls, name: str, **overrides) -> MarkovianRSA:
        if name not in PRESETS:
            raise ZayaEdgeError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})

    # -- derived settings

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

    # -- the run

    def solve(
        self,
        engine: BatchGenerator,
        problem: str,
        on_progress: Callable[[RoundProgress], bool | None] | None = None,
        checkpoint: str | os.PathLike | None = None,
    ) -> SolveResult:
        """Run rounds 0..T (resuming from `checkpoint` if it exists), then select the answer.

        Saves the checkpoint after every completed round. Ctrl-C, or `on_progress` returning
        False, raises SolveInterrupted once what is complete is saved.
        """
        if not problem.strip():
            raise ZayaEdgeError("the problem is empty")
        checkpoint = None if checkpoint is None else str(checkpoint)
        seed, rounds, selection = self._restore(checkpoint, problem)
        resumed = saved = len(rounds)
        self._check_fits(engine, problem)
        progress = on_progress or (lambda p: None)
        try:
            for t in range(len(rounds), self.rounds + 1):
                rounds.append(self._stage(engine, problem, t, seed, rounds, progress))
                self._save(checkpoint, problem, seed, rounds, selection)
                saved = len(rounds)
            if self.select == "aggregate" and selection is None:
                selection = self._stage(engine, problem, self.rounds + 1, seed, rounds, progress)
                self._save(checkpoint, problem, seed, rounds, selection)
        except KeyboardInterrupt:
            raise SolveInterrupted(saved, checkpoint) from None
        return self._result(problem, seed, rounds, selection if self.select == "aggregate" else None, resumed)

    def _stage(self, engine, problem, t, seed, rounds, progress) -> RoundRecord:
        """Build the stage's prompts, generate them in waves, and turn completions into candidates."""
        codec, budget = engine.codec, self.stage_budget(t)
        kind = "rollout" if t == 0 else "select" if t > self.rounds else "aggregate"
        if t == 0:
            subsets = [None] * self.population
            prompt = tuple(codec.chat_prompt(problem))
            prompts = [prompt] * self.population  # identical: the engine prefills once and forks
        else:
            prev = rounds[-1].candidates
            subsets = [self._draw(seed, t, j, len(prev), chain=kind == "aggregate")
                       for j in range(1 if kind == "select" else self.population)]
            template = self.prompt_template
            prompts = [tuple(codec.chat_prompt(render_prompt(template, problem, [prev[i].tail for i in s])))
                       for s in subsets]
        sampling = dict(temperature=self.temperature, top_p=self.top_p) if kind != "select" else SELECT_SAMPLING
        requests = [Request(p, SamplingParams(**sampling, max_new_tokens=budget, seed=_derive(seed, _SAMPLE_STREAM, t, j)))
                    for j, p in enumerate(prompts)]
        for r in requests:
            if len(r.prompt_ids) + budget > engine.context_length:
                raise ZayaEdgeError(
                    f"round {t}: prompt of {len(r.prompt_ids)} tokens + budget {budget} exceeds the engine's "
                    f"context length {engine.context_length}; lower --tail, --subset or the budget")
        start = time.perf_counter()
        completions, waves = self._generate(engine, requests, t, kind, budget, progress)
        wall = time.perf_counter() - start
        cands = [self._candidate(codec, j, r, s, c) for j, (r, s, c) in enumerate(zip(requests, subsets, completions))]
        return RoundRecord(round=t, kind=kind, budget=budget, wall_s=wall, waves=waves, candidates=cands)

    def _draw(self, seed: int, t: int, j: int, n: int, chain: bool) -> list[int]:
        """Fresh C distinct indices of the previous round for prompt j; C = 1 continues chain j."""
        if chain and self.subset == 1:
            return [j]
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SUBSET_STREAM, t, j]))
        return [int(i) for i in rng.choice(n, size=self.subset, replace=False)]

    def _generate(self, engine, requests, t, kind, budget, progress):
        waves = self._waves(engine, requests)
        meter = _RoundMeter(t, self.rounds, kind, waves, budget, progress)
        out: list[Completion | None] = [None] * len(requests)
        for k, wave in enumerate(waves):
            start = time.perf_counter()
            got = engine.generate_batch([requests[i] for i in wave], meter.wave(k))
            if len(got) != len(wave):
                raise RuntimeError(f"engine returned {len(got)} completions for {len(wave)} requests")
            if any(c.finish_reason == "cancelled" for c in got):
                raise KeyboardInterrupt  # a cancelled round is incomplete: keep only what is saved
            meter.wave_done(got, time.perf_counter() - start)
            for i, c in zip(wave, got):
                out[i] = c
        meter.close()
        return out, len(waves)

    def _waves(self, engine, requests) -> list[list[int]]:
        """Consecutive groups whose cache (KV + state at prompt + budget) fits max_memory."""
        if self.max_memory is None:
            return [list(range(len(requests)))]
        waves, used = [[]], 0
        for i, r in enumerate(requests):
            cost = self._check_memory(engine, len(r.prompt_ids) + r.params.max_new_tokens)
            if used + cost > self.max_memory:
                waves.append([])
                used = 0
            waves[-1].append(i)
            used += cost
        return waves

    def _check_memory(self, engine, length: int) -> int:
        cost = engine.cache_bytes_per_sequence(length)
        if self.max_memory is not None and cost > self.max_memory:
            raise ZayaEdgeError(f"max memory {self.max_memory} B cannot hold one sequence of {length} tokens ({cost} B)")
        return cost

    def _candidate(self, codec, j: int, req: Request, subset, c: Completion) -> Candidate:
        body = c.tokens[:-1] if c.finish_reason in ("eos", "stop") and c.tokens else c.tokens
        carried, tail, length = "tail", *self._tail(codec, body, c.text)
        if self.carry_answer_when_finished and THINK_END in c.text:
            section = c.text.rsplit(THINK_END, 1)[1].strip()
            if section:
                ids = codec.encode(section) if self.tail_unit == "tokens" else None
                carried, tail, length = "answer", *self._tail(codec, ids, section)
        return Candidate(index=j, seed=req.params.seed, subset=subset, prompt_tokens=len(req.prompt_ids),
                         generated_tokens=len(c.tokens), finish_reason=c.finish_reason, text=c.text,
                         tail=tail, tail_length=length, carried=carried, answer=self.extractor(c.text))

    def _tail(self, codec, ids, text) -> tuple[str, int]:
        """Last τ model tokens (decoded) or last τ whitespace words (original spacing kept)."""
        if self.tail_unit == "tokens":
            kept = list(ids[-self.tail :])
            tail = codec.decode(kept)
            if len(kept) < len(ids):  # a cut through a multi-byte character decodes to U+FFFD
                tail = tail.lstrip("\ufffd")
            return tail, len(kept)
        words = [m.start() for m in re.finditer(r"\S+", text)]
        if len(words) <= self.tail:
            return text.lstrip(), len(words)
        return text[words[-self.tail] :], self.tail

    def _check_fits(self, engine, problem) -> None:
        """Refuse up front what cannot fit the context (or max_memory) in any round."""
        codec, ctx = engine.codec, engine.context_length
        first = len(codec.chat_prompt(problem))
        needs = [(0, first, f"the problem prompt ({first} tokens)")]
        if self.rounds > 0 or self.select == "aggregate":
            empty = len(codec.chat_prompt(render_prompt(self.prompt_template, problem, [""] * self.subset)))
            bound = empty + self.subset * self.tail
            label = f"the aggregation prompt (up to {bound} tokens: problem + template + {self.subset} x {self.tail} tail)"
            needs += [(t, bound, label) for t in range(1, self.rounds + 1 + (self.select == "aggregate"))]
        for t, length, label in needs:
            budget = self.stage_budget(t)
            if length + budget > ctx:
                which = "final budget" if t >= self.rounds else "budget"
                raise ZayaEdgeError(f"{label} + {which} {budget} = {length + budget} tokens exceeds "
                                    f"the engine's context length {ctx}")
            self._check_memory(engine, length + budget)

    def _result(self, problem, seed, rounds, selection, resumed) -> SolveResult:
        answer, winner, votes = majority_vote(rounds[-1].candidates)
        chosen, by = (rounds[-1].round, winner.index), "vote"
        if selection is not None and selection.candidates[0].answer is not None:
            winner = selection.candidates[0]
            answer, chosen, by = winner.answer, (selection.round, 0), "aggregate"
        params = {**self.identity(seed), "select": self.select, "max_memory": self.max_memory}
        return SolveResult(answer=answer, trace=winner.text, winner=chosen, selected_by=by, votes=votes,
                           rounds=rounds, selection=selection, problem=problem, params=params,
                           resumed_rounds=resumed)

    # -- checkpoints

    def _restore(self, checkpoint, problem):
        """(seed, rounds, selection) from an existing checkpoint, or a fresh start."""
        if checkpoint is None or not os.path.exists(checkpoint):
            return (self.seed if self.seed is not None else secrets.randbits(32)), [], None
        try:
            with open(checkpoint, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError) as exc:
            raise ZayaEdgeError(f"cannot read checkpoint {checkpoint}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ZayaEdgeError(f"checkpoint {checkpoint} is corrupt ({exc})") from None
        try:
            if data.get("format") != _CHECKPOINT_FORMAT or data.get("version") != _CHECKPOINT_VERSION:
                raise ValueError("not a zaya-edge RSA checkpoint of this version")
            saved_seed, saved = data["params"]["seed"], data["params"]
            rounds = [RoundRecord.from_json(r, self.extractor) for r in data["rounds"]]
            sel = data["selection"] and RoundRecord.from_json(data["selection"], self.extractor)
            problem_saved = data["problem"]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ZayaEdgeError(f"checkpoint {checkpoint} is corrupt ({exc})") from None
        if problem_saved != problem:
            raise ZayaEdgeError(f"checkpoint {checkpoint} is for a different problem; use another file")
        seed = saved_seed if self.seed is None else self.seed
        mine = self.identity(seed)
        diff = [f"{k} {saved.get(k)!r} there, {v!r} here" for k, v in mine.items() if saved.get(k) != v]
        if diff:
            raise ZayaEdgeError(f"checkpoint {checkpoint} was made with other settings ({'; '.join(diff)}); "
                                f"use the same settings or another file")
        return seed, rounds, sel or None

    def _save(self, checkpoint, problem, seed, rounds, selection) -> None:
        if checkpoint is None:
            return
        data = {"format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, "problem": problem,
                "params": self.identity(seed), "rounds": [r.to_json() for r in rounds],
                "selection": selection.to_json() if selection else None}
        write_json_atomic(checkpoint, data)


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write temp + rename, so an interruption leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ZayaEdgeError(f"cannot write {path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
