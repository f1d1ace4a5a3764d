"""What a solve produces and what it saves: candidates, rounds, the result, the checkpoint record.

The checkpoint is a versioned plain dict (`Checkpoint.to_dict` / `from_dict`), handed to a
`CheckpointStore`; the runtime never touches files, so where it lives (a JSON file in the app
layer, memory in tests) is the caller's choice.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Protocol

from zaya_edge.errors import ArtifactError, CheckpointError
from zaya_edge.runtime.types import SEED_LIMIT
from zaya_edge.typed_json import decode

from .prompts import THINK_END

# 2: the record names the model (BatchGenerator.model_id), rounds and candidates are typed.
# A version 1 record is refused: it cannot say which model made it.
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "zaya-edge-rsa-checkpoint", 2


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

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "candidates": [dataclasses.asdict(c) for c in self.candidates]}

    @classmethod
    def from_dict(cls, d, extractor: Callable[[str], str | None], where: str = "round") -> RoundRecord:
        """Every field checked against its type (ArtifactError naming it); answers are extracted
        again, so a resumed solve may bring its own extractor."""
        record = decode(cls, d, where)
        cands = [dataclasses.replace(c, answer=extractor(c.text)) for c in record.candidates]
        return dataclasses.replace(record, candidates=cands)

    def check_shape(self, kind: str, candidates: int) -> str | None:
        """What is wrong with this record as a stage of `kind` with `candidates` candidates, or None."""
        if self.kind != kind:
            return f"round {self.round} is a {self.kind!r} stage, not {kind!r}"
        if len(self.candidates) != candidates:
            return f"round {self.round} holds {len(self.candidates)} candidates, not {candidates}"
        if [c.index for c in self.candidates] != list(range(candidates)):
            return f"the candidates of round {self.round} are not numbered 0, 1, ... in order"
        return None


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
        where = (f"saved in {checkpoint}; solve again with the same checkpoint to resume"
                 if checkpoint else "nothing saved (no checkpoint was given)")
        super().__init__(f"interrupted after {completed_rounds} completed round(s); {where}")


# ---------------------------------------------------------------- checkpoints


class CheckpointStore(Protocol):
    """Where a solve keeps its checkpoint record between rounds; `str(store)` names it in messages."""

    def load(self) -> dict | None:
        """The saved record, or None when nothing is saved yet."""
        ...

    def save(self, record: dict) -> None:
        """Replace the saved record, all of it or nothing."""
        ...


class MemoryCheckpoint:
    """A store that keeps the record in this process (tests, apps that persist it elsewhere)."""

    def __init__(self, record: dict | None = None):
        self.record = copy.deepcopy(record)

    def load(self) -> dict | None:
        return copy.deepcopy(self.record)

    def save(self, record: dict) -> None:
        self.record = copy.deepcopy(record)

    def __str__(self) -> str:
        return "the in-memory checkpoint"


@dataclasses.dataclass
class Checkpoint:
    """A solve's completed rounds, and what a resume must agree with (problem, model, settings)."""

    problem: str
    params: dict  # MarkovianRSA.identity(seed)
    model: str  # BatchGenerator.model_id of the engine that made the rounds
    rounds: list[RoundRecord]
    selection: RoundRecord | None = None

    @property
    def seed(self) -> int:
        return self.params["seed"]

    def to_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "problem": self.problem,
                "params": self.params, "model": self.model, "rounds": [r.to_dict() for r in self.rounds],
                "selection": self.selection.to_dict() if self.selection else None}

    @classmethod
    def from_dict(cls, data, extractor: Callable[[str], str | None], where: str) -> Checkpoint:
        """Rebuild a saved record; a malformed one, or one of another format version, is one clear error."""
        try:
            return cls._parse(data, extractor, where)
        except KeyError as exc:
            raise CheckpointError(f"checkpoint {where} is corrupt (no field {exc})") from None
        except (ArtifactError, AttributeError, TypeError, ValueError) as exc:  # ArtifactError: typed_json's
            raise CheckpointError(f"checkpoint {where} is corrupt ({exc})") from None

    @classmethod
    def _parse(cls, data, extractor, where: str) -> Checkpoint:
        if not isinstance(data, dict):
            raise TypeError(f"a record is an object, not {type(data).__name__}")
        found = (data.get("format"), data.get("version"))
        if found == (CHECKPOINT_FORMAT, 1):
            raise CheckpointError(f"checkpoint {where} was written by an earlier zaya-edge (record version 1, "
                                  f"which does not name the model); re-run without the checkpoint")
        if found != (CHECKPOINT_FORMAT, CHECKPOINT_VERSION):
            raise ValueError(f"format {found[0]!r} version {found[1]!r}; this runtime reads "
                             f"{CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}")
        params, problem, model = data["params"], data["problem"], data["model"]
        seed = params.get("seed") if isinstance(params, dict) else None
        if type(seed) is not int or not 0 <= seed < SEED_LIMIT:
            raise ValueError("its params hold no seed in [0, 2**64)")
        if not isinstance(problem, str) or not isinstance(model, str):
            raise TypeError("its problem or model is not text")
        if not isinstance(data["rounds"], list):
            raise TypeError("its rounds are not a list")
        rounds = [RoundRecord.from_dict(r, extractor, f"rounds[{i}]") for i, r in enumerate(data["rounds"])]
        if [r.round for r in rounds] != list(range(len(rounds))):
            raise ValueError("its rounds are not numbered 0, 1, ... in order")
        selection = data["selection"]
        if selection is not None:
            selection = RoundRecord.from_dict(selection, extractor, "selection")
        return cls(problem=problem, params=params, model=model, rounds=rounds, selection=selection)

    def check_shape(self, population: int, rounds: int, where: str) -> None:
        """Refuse a record that is not a run of this shape: at most T + 1 rounds of N candidates (round 0
        the rollout), and a selection (one candidate) only after the last round."""
        problems = [r.check_shape("rollout" if r.round == 0 else "aggregate", population) for r in self.rounds]
        if len(self.rounds) > rounds + 1:
            problems.insert(0, f"{len(self.rounds)} rounds, more than rounds + 1 = {rounds + 1}")
        if self.selection is not None:
            if len(self.rounds) != rounds + 1 or self.selection.round != rounds + 1:
                problems.append(f"a selection (round {self.selection.round}) after {len(self.rounds)} of "
                                f"{rounds + 1} rounds")
            problems.append(self.selection.check_shape("select", 1))
        problem = next((p for p in problems if p), None)
        if problem:
            raise CheckpointError(f"checkpoint {where} is corrupt ({problem})")
