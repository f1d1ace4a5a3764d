"""Markovian RSA evaluation on a Ray cluster (the optional `[ray]` extra).

    driver     evaluate_on_ray: the actor pool, the queue, replacing lost actors, EvalInterrupted
    worker     the worker actor: one Engine, one problem at a time, its token meter
    store      the keeper actor: every problem's checkpoint (and its folder), token counts
    placement  actors per node from the nodes' cores and memory
    progress   ClusterProgress and its tqdm bar
    problems   one problem of an eval, solved as `evaluate` solves it (the seam)

Nothing here imports Ray until a run starts, so the package (and the CLI) imports without it.
"""

from .driver import EvalInterrupted, evaluate_on_ray
from .problems import ResumableProblemResult, rsa_settings, solve_problem
from .progress import ClusterBar, ClusterProgress

__all__ = ["evaluate_on_ray", "EvalInterrupted", "ClusterProgress", "ClusterBar", "ResumableProblemResult",
           "solve_problem", "rsa_settings"]
