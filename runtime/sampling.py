"""Token sampling in numpy: a chain of small pure steps ending in one pick.

    logits ─ repetition penalty ─ temperature ─ softmax weights ─ top-k ─ top-p ─ min-p ─ pick

ZAYA's vocabulary has 262k entries, so every step works on a short candidate list rather
than sorting the whole row: top-k and top-p look at a partition of the best few hundred
tokens and widen it only when those do not hold enough probability. Each request owns a
`numpy.random.Generator` seeded from its `seed`, so it draws the same tokens whatever else
shares its batch.
"""

from __future__ import annotations

import numpy as np

from .types import SamplingParams

FIRST_CANDIDATES = 256


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


def top_k(weights: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The k heaviest of `ids`."""
    if k <= 0 or k >= ids.size:
        return ids
    return ids[np.argpartition(weights[ids], -k)[-k:]]


def top_p(weights: np.ndarray, ids: np.ndarray, p: float, total: float) -> np.ndarray:
    """The smallest set of the heaviest `ids` whose probability reaches p.

    A partition of the best few hundred tokens is enough for any peaked distribution; it is
    widened only when those do not hold mass p.
    """
    if p >= 1.0:
        return ids
    k = min(FIRST_CANDIDATES, ids.size)
    while True:
        cand = ids[np.argpartition(weights[ids], -k)[-k:]] if k < ids.size else ids
        if k == ids.size or weights[cand].sum() >= p * total:
            break
        k = min(4 * k, ids.size)
    order = cand[np.argsort(-weights[cand], kind="stable")]
    mass_before = (np.cumsum(weights[order]) - weights[order]) / total
    return order[mass_before < p]


def min_p(weights: np.ndarray, ids: np.ndarray, ratio: float) -> np.ndarray:
    """Tokens at least `ratio` times as likely as the most likely one."""
    if ratio <= 0.0:
        return ids
    return ids[weights[ids] >= ratio * weights[ids].max()]


def draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """Inverse-CDF draw from unnormalised weights: one uniform number per token."""
    cdf = np.cumsum(weights, dtype=np.float64)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), weights.size - 1))


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, seen: np.ndarray) -> int:
    """Pick one token from a [vocab] row of logits."""
    logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.temperature == 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float32) / np.float32(params.temperature)
    weights = np.exp(z - z.max())  # softmax up to its normaliser; the top token weighs 1
    if params.top_k <= 0 and params.top_p >= 1.0 and params.min_p <= 0.0:
        return draw(weights, rng)
    ids = np.arange(weights.size)
    ids = top_k(weights, ids, params.top_k)
    ids = top_p(weights, ids, params.top_p, float(weights[ids].sum()) if params.top_k > 0 else float(weights.sum()))
    ids = min_p(weights, ids, params.min_p)
    ids = np.sort(ids)  # a fixed order: the draw must not depend on how candidates were found
    return int(ids[draw(weights[ids], rng)])
