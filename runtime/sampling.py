"""Token sampling in numpy: a chain of small pure steps ending in one pick.

    logits ─ repetition penalty ─ temperature ─ top-k ─ top-p ─ min-p ─ pick (argmax or draw)

Each request owns a `numpy.random.Generator` seeded from its `seed`, so a request draws the
same tokens whatever else shares its batch.
"""

from __future__ import annotations

import numpy as np

from .types import SamplingParams


def make_rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL-style: divide positive, multiply negative logits of tokens already seen."""
    if penalty == 1.0 or seen.size == 0:
        return logits
    out = logits.copy()
    vals = out[seen]
    out[seen] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= logits.size:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def top_p_filter(probs: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches p."""
    if p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    keep = cum - probs[order] < p  # a token is kept if the mass before it is below p
    out = np.zeros_like(probs)
    out[order[keep]] = probs[order[keep]]
    return out / out.sum()


def min_p_filter(probs: np.ndarray, min_p: float) -> np.ndarray:
    if min_p <= 0.0:
        return probs
    out = np.where(probs >= min_p * probs.max(), probs, 0.0)
    return out / out.sum()


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, seen: np.ndarray) -> int:
    """Pick one token from a [vocab] row of logits."""
    logits = apply_repetition_penalty(logits.astype(np.float64), seen, params.repetition_penalty)
    if params.temperature == 0.0:
        return int(np.argmax(logits))
    logits = top_k_filter(logits / params.temperature, params.top_k)
    probs = min_p_filter(top_p_filter(softmax(logits), params.top_p), params.min_p)
    return int(rng.choice(probs.size, p=probs))
