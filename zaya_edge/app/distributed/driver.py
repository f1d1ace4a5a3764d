"""`evaluate_on_ray`: an RSA eval whose problems run on a pool of Ray actors, each holding one Engine.

The driver keeps the queue: one problem per free actor, results put back in problem order, so
the EvalReport is the one `evaluate` gives with the same seed (every problem's seed derives from
(seed, index); rounds from (that seed, round, index)). An actor lost mid-problem puts its problem
back at the head of the queue and is replaced; the next actor resumes it from the last round the
keeper holds. Ray is imported only when a run starts, so this package imports without it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import secrets
import time
from pathlib import Path
from typing import Callable

from zaya_edge.app.eval import EvalReport
from zaya_edge.artifact import Artifact
from zaya_edge.errors import ZayaEdgeError, first_line
from zaya_edge.runtime.rsa import MarkovianRSA

from . import placement
from .problems import rsa_problems, rsa_settings
from .progress import ClusterProgress
from .store import CheckpointKeeper
from .worker import EvalWorker

REPORT_S = 0.25  # how often a worker sends its token count to the keeper


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C (or an on_progress that raised KeyboardInterrupt) during a distributed eval."""

    def __init__(self, done: int, total: int, folder: str | None):
        self.done, self.total, self.folder = done, total, folder
        super().__init__(f"interrupted with {done}/{total} problem(s) done; {_resume_hint(folder)}")


def evaluate_on_ray(
    artifact: str | Path,
    task: str = "tiny-arith",
    strategy: MarkovianRSA | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    address: str | None = None,
    actors: int | None = None,
    threads: int | None = None,
    checkpoints: str | Path | None = None,
    actor_memory: int | None = None,
    restarts: int | None = None,
    on_progress: Callable[[ClusterProgress], None] | None = None,
    refresh_s: float = 0.5,
) -> EvalReport:
    """`evaluate(engine, task, strategy, limit=, seed=)` with the problems spread over Ray actors.

    `artifact`: a folder at the same path on every node. `address`: a Ray cluster to join (None or
    "": the one this process is connected to, else a new local one). `actors` (default: as many as
    the nodes' cores and memory fit) of `threads` onnxruntime threads each (default: a node's cores
    split among its actors); `actor_memory` bytes each (default: estimated from the artifact).
    `checkpoints`: a folder on the driver's machine for every problem's rounds; a run interrupted
    (EvalInterrupted) or stopped resumes from it. `restarts`: lost actors replaced (default: as many
    as were started). `on_progress` gets a ClusterProgress every `refresh_s` and after every event.
    """
    ray = _import_ray()
    problems = rsa_problems(task, limit, strategy)
    opened = Artifact.open(Path(artifact).resolve())
    memory = placement.actor_memory(opened, strategy) if actor_memory is None else actor_memory
    started = _connect(ray, address)
    try:
        slots = placement.plan(ray.nodes(), memory, threads, actors)[: len(problems)]
        where = str(Path(checkpoints).resolve()) if checkpoints else None
        pool = _Pool(ray, problems, strategy, seed, str(opened.folder), where, memory)
        pool.restarts = len(slots) if restarts is None else restarts  # the replacements the run may start
        results, wall = pool.run(slots, on_progress or (lambda p: None), refresh_s)
    finally:
        if started:
            ray.shutdown()
    return EvalReport(task, "rsa", rsa_settings(strategy, seed), results, wall)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ZayaEdgeError("Ray is not installed: pip install 'zaya-edge[ray]'") from None
    return ray


def _connect(ray, address: str | None) -> bool:
    """Join `address` (or start a local cluster) unless already connected; True if this call connected."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level="WARNING")
        else:
            ray.init(include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = first_line(exc)
        raise ZayaEdgeError(f"cannot join the Ray cluster at {address or 'a new local instance'}: {first}") from None
    return True


def _resume_hint(folder: str | None) -> str:
    return (f"run again with the same checkpoints folder ({folder}) to resume" if folder
            else "pass a checkpoints folder to make the run resumable")


@dataclasses.dataclass
class _Actor:
    handle: object
    slot: placement.Slot
    name: str


class _Pool:
    """The worker actors, the queue of problems, what is running where and what is done."""

    def __init__(self, ray, problems, strategy, seed, artifact, folder, memory):
        self.ray, self.problems, self.strategy, self.seed = ray, problems, strategy, seed
        self.artifact, self.folder, self.memory = artifact, folder, memory
        self.queue = collections.deque(range(len(problems)))
        self.free: list[_Actor] = []
        self.starting: dict[object, _Actor] = {}  # ready() ref -> actor
        self.busy: dict[object, tuple[_Actor, int]] = {}  # solve() ref -> (actor, problem index)
        self.results: dict[int, object] = {}
        self.lost, self.restarts, self.last_loss, self.start = 0, 0, "", None
        self.run_id, self.numbers = secrets.token_hex(3), itertools.count()
        self.keeper = self._keeper()
        self.worker_class = ray.remote(EvalWorker)

    def _keeper(self):
        """On the driver's node, so a checkpoints folder is a folder of the driver's machine."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(self.ray.get_runtime_context().get_node_id(), soft=False)
        return self.ray.remote(CheckpointKeeper).options(num_cpus=0, scheduling_strategy=here).remote(self.folder)

    def _spawn(self, slot: placement.Slot) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        name = f"zaya-eval-{self.run_id}-{next(self.numbers)}"
        options = dict(name=name, num_cpus=slot.threads, memory=self.memory, max_restarts=0,
                       scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node_id, soft=True))
        handle = self.worker_class.options(**options).remote(name, self.artifact, slot.threads, self.keeper,
                                                             self.folder, REPORT_S)
        actor = _Actor(handle, slot, name)
        self.starting[handle.ready.remote()] = actor

    def run(self, slots, on_progress, refresh_s: float) -> tuple[list, float]:
        """Every problem's result in problem order, and the seconds since the first actor was ready."""
        for slot in slots:
            self._spawn(slot)
        try:
            while len(self.results) < len(self.problems):
                self._dispatch()
                waiting = [*self.busy, *self.starting]
                if not waiting:
                    raise ZayaEdgeError(f"all engine actors were lost ({self.lost}; the last: {self.last_loss}); "
                                        f"{_resume_hint(self.folder)}")
                done, _ = self.ray.wait(waiting, num_returns=1, timeout=refresh_s)
                for ref in done:
                    self._settle(ref)
                on_progress(self._progress())
        except KeyboardInterrupt:
            raise EvalInterrupted(len(self.results), len(self.problems), self.folder) from None
        finally:
            self._stop()
        wall = time.perf_counter() - self.start if self.start is not None else 0.0
        return [self.results[i] for i in range(len(self.problems))], wall

    def _dispatch(self) -> None:
        while self.queue and self.free:
            actor, index = self.free.pop(0), self.queue.popleft()
            ref = actor.handle.solve.remote(index, self.problems[index], self.strategy, self.seed)
            self.busy[ref] = (actor, index)

    def _settle(self, ref) -> None:
        """A ready() or solve() came back: a free actor, a result, a lost actor or an error to raise."""
        loading = ref in self.starting
        actor, index = (self.starting.pop(ref), None) if loading else self.busy.pop(ref)
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # raised by our code in the actor: not a loss
            raise (exc.cause if isinstance(exc.cause, ZayaEdgeError) else exc) from None
        except self.ray.exceptions.RayActorError as exc:
            return self._lose(actor, index, exc)
        if loading and value is not None:
            raise ZayaEdgeError(f"engine actor {actor.name} cannot load the artifact: {value}")
        if not loading:
            self.results[index] = value
        if self.start is None:
            self.start = time.perf_counter()
        self.free.append(actor)

    def _lose(self, actor: _Actor, index: int | None, exc: Exception) -> None:
        """Requeue its problem first in line; replace the actor while the restart budget lasts."""
        self.lost += 1
        self.last_loss = first_line(exc)
        if index is not None:
            self.queue.appendleft(index)
        self.ray.kill(actor.handle)  # one that only seemed lost must not write the checkpoint again
        if self.lost <= self.restarts:
            self._spawn(actor.slot)

    def _progress(self) -> ClusterProgress:
        tokens, saved = self.ray.get(self.keeper.status.remote())
        running = {index: actor.name for actor, index in self.busy.values()}
        return ClusterProgress(
            done=len(self.results), total=len(self.problems), actors=len(self.free) + len(self.busy),
            lost=self.lost, generated_tokens=tokens,
            elapsed_s=time.perf_counter() - self.start if self.start is not None else 0.0,
            running=running, saved_rounds={i: saved.get(i, 0) for i in running})

    def _stop(self) -> None:
        for actor in [*self.free, *self.starting.values(), *(a for a, _ in self.busy.values())]:
            self.ray.kill(actor.handle)
        self.ray.kill(self.keeper)
