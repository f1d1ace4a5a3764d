"""Progress bars for the commands (tqdm); the library only reports numbers through callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from zaya_edge.runtime.rsa import RoundProgress


def round_label(stage: int, rounds: int, kind: str) -> str:
    """`round 1 of 3 (rollouts)`, `round 2 of 3 (aggregation)`, `final aggregation`: stages 0..T, then T + 1."""
    if kind == "select":
        return "final aggregation"
    return f"round {stage + 1} of {rounds + 1} ({'rollouts' if kind == 'rollout' else 'aggregation'})"


def rounds_done(count: int, rounds: int) -> str:
    """`round 1 of 3 done`, `rounds 1..2 of 3 done`, in the words of round_label."""
    total = rounds + 1
    if count > total:
        return f"all {total} rounds and the final aggregation done"
    return f"round 1 of {total} done" if count == 1 else f"rounds 1..{count} of {total} done"


def clock(seconds: float) -> str:
    """h:mm:ss, hours unbounded (a 30-hour bound reads 30:00:00, not 06:00:00)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class ProgressBar:
    """A tqdm bar per RSA round: sequences done, live, tokens, tokens/s and an ETA where it is an upper bound.

    The runtime's `eta_s` bounds the round from above when each wave runs as one batch: no more
    sequences than the engine's `max_batch` (None: no limit). Otherwise, and before the first
    token, nothing is shown rather than a guess.
    """

    def __init__(self, file=None, max_batch: int | None = None):
        self.file, self.max_batch, self.bar, self.stage = file, max_batch, None, None

    def __call__(self, p: RoundProgress) -> None:
        if p.stage != self.stage:
            self.close()
            self.bar = tqdm(total=p.total, desc=round_label(p.stage, p.rounds, p.kind), unit="seq", file=self.file,
                            leave=True, bar_format="{desc}: {n}/{total} seq |{bar:16}|{postfix}")
            self.stage = p.stage
        self.bar.set_postfix_str(f"live {p.live}, {p.generated_tokens} tok, {p.tokens_per_s:.1f} tok/s{self._eta(p)}",
                                 refresh=False)
        self.bar.update(p.finished - self.bar.n)  # redraws at most every mininterval
        if p.done:
            self.close()

    def _eta(self, p: RoundProgress) -> str:
        bounded = self.max_batch is None or p.total <= self.max_batch
        if p.done or not p.live or not p.generated_tokens or p.elapsed_s <= 0 or not bounded:
            return ""
        return f", ETA ≤ {clock(p.eta_s)}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.stage = None, None


class ProblemBar:
    """A tqdm bar over an eval's problems, fed by `evaluate(on_problem=...)`."""

    def __init__(self, desc: str, file=None):
        self.bar = tqdm(unit="problem", desc=desc, leave=False, file=file)

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
