"""Markovian RSA: recursive self-aggregation over bounded tails, as a strategy driving a BatchGenerator.

A population of N candidates is regenerated T times; each new candidate sees C tails (last τ
generated tokens) of the previous round only, so every prompt stays ≤ |problem| + C·τ + template
however long the model thinks. The population is the batch: one `generate_batch` per round (or
per memory-sized wave). Method and defaults: shared/reference/markovian-rsa.md (ZAYA1-8B report,
section VI).

    settings   MarkovianRSA, PRESETS: validated once, when made
    prompts    templates, boxed answers, the majority vote
    records    candidates, rounds, results, the versioned checkpoint record and its store protocol
    runner     the solve loop, waves and the per-round progress meter
"""

from .prompts import default_template, extract_boxed, majority_vote, read_template, render_prompt
from .records import (
    Candidate, Checkpoint, CheckpointStore, MemoryCheckpoint, RoundRecord, SolveInterrupted, SolveResult,
)
from .runner import RoundProgress
from .settings import PRESETS, SELECTIONS, TAIL_UNITS, MarkovianRSA

__all__ = [
    "PRESETS", "SELECTIONS", "TAIL_UNITS", "MarkovianRSA", "SolveResult", "Candidate", "RoundRecord", "RoundProgress",
    "SolveInterrupted", "Checkpoint", "CheckpointStore", "MemoryCheckpoint", "extract_boxed",
    "majority_vote", "read_template", "default_template", "render_prompt",
]
