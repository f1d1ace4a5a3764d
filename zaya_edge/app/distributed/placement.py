"""How many worker actors go on which node, and with how many threads: from the nodes' cores and memory.

Each actor holds a whole Engine (the weights plus the cache of one problem's population), so a
node takes as many as its cores (at `threads` each) and its memory allow. Without `threads`, a
node's cores are split among the actors its memory fits. Actors are interleaved across nodes,
so a few of them still spread over the cluster.
"""

from __future__ import annotations

import dataclasses
import itertools

from zaya_edge.artifact import Artifact
from zaya_edge.errors import RequestError
from zaya_edge.runtime.rsa import MarkovianRSA

MiB = 1 << 20
OVERHEAD = 384 * MiB  # an actor's Python, onnxruntime and tokenizer before any weight
MAX_LIVE = 16  # Engine's default max_batch: the sequences whose cache lives at once


@dataclasses.dataclass(frozen=True)
class Slot:
    node_id: str
    threads: int


def actor_memory(artifact: Artifact, strategy: MarkovianRSA) -> int:
    """Bytes one actor needs: the weights (and onnxruntime's copy of them), the population's cache at its longest prompt."""
    dims, s = artifact.dims, strategy
    longest = min(artifact.context_length, max(s.budget, s.stage_budget(s.rounds)) + s.subset * s.tail + 1024)
    kv = artifact.manifest.kv_bytes_per_token
    cache = min(s.population, MAX_LIVE) * (kv * longest + dims.fixed_state_bytes)
    if s.max_memory is not None:
        cache = min(cache, s.max_memory)
    return int(artifact.weight_bytes * 1.5) + cache + OVERHEAD


def plan(nodes: list[dict], memory: int, threads: int | None = None, actors: int | None = None) -> list[Slot]:
    """Slots for `actors` workers (default: as many as the alive nodes fit), given ray.nodes()."""
    if memory < 1:
        raise RequestError(f"actor memory must be a positive number of bytes, got {memory}")
    if threads is not None and threads < 1:
        raise RequestError(f"threads per actor must be >= 1, got {threads}")
    if actors is not None and actors < 1:
        raise RequestError(f"actors must be >= 1, got {actors}")
    per_node = [_node_slots(n, memory, threads) for n in nodes if n.get("Alive", True)]
    order = [s for group in itertools.zip_longest(*per_node) for s in group if s is not None]
    if not order:
        raise RequestError(f"no node of the Ray cluster has a free core ({threads or 1} thread(s)) "
                           f"and {memory // MiB} MiB of memory for one engine actor")
    if actors is not None and actors > len(order):
        raise RequestError(f"the Ray cluster fits {len(order)} engine actor(s) of {threads or 1} thread(s) "
                           f"and {memory // MiB} MiB each, not {actors}; ask for fewer actors or threads")
    return order[:actors] if actors is not None else order


def _node_slots(node: dict, memory: int, threads: int | None) -> list[Slot]:
    cpus = int(node.get("Resources", {}).get("CPU", 0))
    fit = min(cpus // (threads or 1), int(node.get("Resources", {}).get("memory", 0) // memory))
    if fit < 1:
        return []
    return [Slot(node["NodeID"], threads or max(1, cpus // fit))] * fit
