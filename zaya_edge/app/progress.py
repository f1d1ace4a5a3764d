"""Progress bars for the commands (tqdm); the library only reports numbers through callbacks."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from zaya_edge.runtime.rsa import RoundProgress


class ProgressBar:
    """A tqdm bar per RSA round: sequences done, live, tokens, tokens/s and an upper-bound ETA."""

    def __init__(self, file=None):
        self.file, self.bar, self.stage = file, None, None

    def __call__(self, p: RoundProgress) -> None:
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


class ProblemBar:
    """A tqdm bar over an eval's problems, fed by `evaluate(on_problem=...)`."""

    def __init__(self, desc: str, file=None):
        self.bar = tqdm(unit="problem", desc=desc, leave=False, file=file)

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
