"""A worker actor's body: one Engine over the artifact, solving one eval problem at a time.

The driver wraps `EvalWorker` with ray.remote (num_cpus = its onnxruntime threads), so this
module runs in the actor's process and needs no Ray import of its own.
"""

from __future__ import annotations

import time

from zaya_edge.app.tiny_arith import Problem
from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime.rsa import MarkovianRSA, RoundProgress

from .problems import ResumableProblemResult, solve_problem
from .store import RemoteCheckpoint, checkpoint_name


class EvalWorker:
    """Loads the artifact from a path its node can see; a load error is kept and told by ready()."""

    def __init__(self, name: str, artifact: str, threads: int, keeper, folder: str | None, report_s: float):
        from zaya_edge.runtime import Engine

        self.name, self.keeper, self.folder = name, keeper, folder
        self.meter = TokenMeter(lambda tokens: keeper.count.remote(name, tokens), report_s)
        self.engine, self.error = None, None
        try:
            self.engine = Engine.load(artifact, threads=threads)
        except ZayaEdgeError as exc:
            self.error = str(exc)

    def ready(self) -> str | None:
        """None once the engine is loaded, else why it could not be."""
        return self.error

    def solve(self, index: int, problem: Problem, strategy: MarkovianRSA, seed: int) -> ResumableProblemResult:
        store = RemoteCheckpoint(self.keeper, index, checkpoint_name(self.folder, index))
        return solve_problem(self.engine, index, problem, strategy, seed, store, self.meter)


class TokenMeter:
    """Folds a solve's per-round progress into this worker's running token total, sent every `every_s`."""

    def __init__(self, send, every_s: float):
        self.send, self.every_s = send, every_s
        self.done, self.sent_at = 0, float("-inf")  # tokens of completed stages; when last sent

    def __call__(self, p: RoundProgress) -> None:
        total = self.done + p.generated_tokens
        if p.done:
            self.done = total
        now = time.monotonic()
        if p.done or now - self.sent_at >= self.every_s:
            self.send(total)
            self.sent_at = now
