"""The run's shared state: one keeper actor on the driver's node that every worker actor reaches.

It holds each problem's Markovian RSA checkpoint record (and, given a folder, mirrors it to one
JsonCheckpoint file per problem on the driver's disk, so a whole run can be stopped and resumed)
plus each worker's running token count for the progress view. Workers need no shared filesystem:
they reach it through `RemoteCheckpoint`, a `CheckpointStore` whose calls wait for the keeper,
so a round is saved before the next one starts and a lost actor's problem resumes from it.
"""

from __future__ import annotations

from pathlib import Path

from zaya_edge.app.files import JsonCheckpoint


class CheckpointKeeper:
    """The keeper actor's body (wrapped with ray.remote by the driver): checkpoints and token counts."""

    def __init__(self, folder: str | None):
        self.folder = Path(folder) if folder else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.records: dict[int, dict] = {}
        self.tokens: dict[str, int] = {}

    def _file(self, index: int) -> JsonCheckpoint:
        return JsonCheckpoint(self.folder / _filename(index))

    def load(self, index: int) -> dict | None:
        if index not in self.records and self.folder is not None:
            record = self._file(index).load()
            if record is not None:
                self.records[index] = record
        return self.records.get(index)

    def save(self, index: int, record: dict) -> None:
        if self.folder is not None:
            self._file(index).save(record)  # atomic: the old round or the new one
        self.records[index] = record

    def count(self, worker: str, tokens: int) -> None:
        """A worker's tokens generated so far (sent fire-and-forget, at most every few tenths of a second)."""
        self.tokens[worker] = max(tokens, self.tokens.get(worker, 0))

    def status(self) -> tuple[int, dict[int, int]]:
        """(tokens generated across the cluster, {problem index: completed rounds saved})."""
        return sum(self.tokens.values()), {i: len(r.get("rounds", ())) for i, r in self.records.items()}


class RemoteCheckpoint:
    """One problem's CheckpointStore, kept by the keeper actor; used inside a worker actor."""

    def __init__(self, keeper, index: int, where: str):
        self.keeper, self.index, self.where = keeper, index, where

    def __str__(self) -> str:
        return self.where

    def load(self) -> dict | None:
        return _wait(self.keeper.load.remote(self.index))

    def save(self, record: dict) -> None:
        _wait(self.keeper.save.remote(self.index, record))


def checkpoint_name(folder: str | None, index: int) -> str:
    """How messages name problem `index`'s checkpoint."""
    return str(Path(folder) / _filename(index)) if folder else f"problem {index}'s checkpoint in the Ray cluster"


def _filename(index: int) -> str:
    return f"problem-{index:04d}.json"


def _wait(ref):
    """The keeper's answer; a CheckpointError raised there is raised here as itself, not wrapped."""
    import ray  # only ever runs inside a Ray worker

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if exc.cause is None:
            raise
        raise exc.cause from None
