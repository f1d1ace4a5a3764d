"""One progress view of a distributed eval: problems done, actors, tokens/s across the cluster, ETA.

The driver builds a `ClusterProgress` from its own bookkeeping and the keeper's token counts a
few times a second; `ClusterBar` draws it as one tqdm bar in the driver's terminal.
"""

from __future__ import annotations

import dataclasses

from tqdm import tqdm

from zaya_edge.app.progress import clock


@dataclasses.dataclass
class ClusterProgress:
    done: int  # problems finished (in any order)
    total: int
    actors: int  # worker actors loaded and alive
    lost: int  # worker actors lost so far (their problems went back to the queue)
    generated_tokens: int  # by every worker, lost ones included
    elapsed_s: float
    running: dict[int, str]  # problem index -> the worker actor's name
    saved_rounds: dict[int, int]  # problem index -> completed rounds in its checkpoint (running ones)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """At the pace so far; None before the first problem is done."""
        return self.elapsed_s / self.done * (self.total - self.done) if self.done else None


class ClusterBar:
    """A tqdm bar over the eval's problems, fed by `evaluate_on_ray(on_progress=...)`."""

    def __init__(self, desc: str, file=None):
        self.bar = tqdm(unit="problem", desc=desc, leave=False, file=file,
                        bar_format="{desc}: {n}/{total} |{bar:16}| {elapsed}{postfix}")

    def __call__(self, p: ClusterProgress) -> None:
        self.bar.total = p.total
        lost = f" ({p.lost} lost)" if p.lost else ""
        eta = "?" if p.eta_s is None else clock(p.eta_s)
        self.bar.set_postfix_str(f"{p.actors} actor(s){lost}, {len(p.running)} running, "
                                 f"{p.generated_tokens} tok, {p.tokens_per_s:.1f} tok/s, ETA {eta}", refresh=False)
        self.bar.update(p.done - self.bar.n)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
