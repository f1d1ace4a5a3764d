"""The longest stall of a running sequence while a long prompt joins its batch (issue 15), A/B.

One sequence decodes while a `--prompt`-token prompt is admitted into the batch (the slot a
finished neighbour frees). A: the prompt is prefilled all at once between two decode steps, as
the runtime did before interleaving (prefill_budget larger than the prompt); B: a chunk per step
(the default budget, one 512-token chunk). Printed per arm: the longest gap between two decode
steps of the live row (the stall), the median gap (a step), and the time from the start to the
long prompt's move into the batch. Runs alternate A, B, A, B in one process.

    .venv/bin/python benchmarks/interleave_stall.py [--prompt 4096 --runs 3 --threads 2]

The random export (hidden 512, 4 layers, context 8192) is prefix_prefill.py's, made once under
.cache/prefix-bench. Timings on a shared machine are noisy: compare the A/B ratio of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefix_prefill import make_artifact  # noqa: E402

from zaya_edge.runtime import Engine, Request, SamplingParams  # noqa: E402
from zaya_edge.runtime.batch import SequenceBatch  # noqa: E402

ARMS = {"A all at once": 1 << 30, "B chunk per step": None}


def run(engine: Engine, prompt: int, seed: int) -> dict:
    """Gaps between the live row's decode steps while the long prompt comes in, and when it is in."""
    rng = np.random.default_rng(seed)

    def ids(n):
        return tuple(int(t) for t in rng.integers(7, engine.dims.vocab_size, n))

    def greedy(n):
        return SamplingParams(temperature=0.0, max_new_tokens=n, ignore_eos=True)

    steps, moved = [], []
    step, admit = SequenceBatch.step, SequenceBatch.admit
    SequenceBatch.step = lambda self, tokens: steps.append(time.perf_counter()) or step(self, tokens)
    SequenceBatch.admit = lambda self, prompts: [admit(self, prompts), moved.append(time.perf_counter())][0]
    try:
        t0 = time.perf_counter()
        # the long-lived row, a neighbour that leaves after 4 tokens, and the long prompt taking its slot
        engine.generate_batch([Request(ids(64), greedy(48)), Request(ids(16), greedy(4)), Request(ids(prompt), greedy(2))])
    finally:
        SequenceBatch.step, SequenceBatch.admit = step, admit
    gaps = np.diff(steps)
    return {"stall_ms": 1e3 * float(gaps.max()), "step_ms": 1e3 * float(np.median(gaps)), "in_s": moved[-1] - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    art = make_artifact()
    engines = {arm: Engine.load(art, threads=args.threads, max_batch=2, prefix_cache=0, prefill_budget=budget)
               for arm, budget in ARMS.items()}
    for engine in engines.values():
        run(engine, 600, seed=99)  # warm-up
    samples: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for r in range(args.runs):
        for arm, engine in engines.items():
            samples[arm].append(run(engine, args.prompt, seed=r))
    print(f"a {args.prompt}-token prompt joins a batch with one live row "
          f"(hidden 512, 4 layers, fp32, {args.threads} threads); medians of {args.runs} interleaved runs")
    print(f"{'arm':<18} {'longest stall ms':>17} {'median step ms':>15} {'long prompt in s':>17}")
    med = {arm: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for arm, runs in samples.items()}
    for arm, m in med.items():
        print(f"{arm:<18} {m['stall_ms']:>17.1f} {m['step_ms']:>15.2f} {m['in_s']:>17.2f}")
    a, b = med["A all at once"], med["B chunk per step"]
    chunks = -(-args.prompt // 512)
    print(f"stall B/A = {b['stall_ms'] / a['stall_ms']:.3f}: B's stall is its costliest chunk, the last (deepest "
          f"context), so somewhat above 1/{chunks}; the long prompt is in as soon (B/A {b['in_s'] / a['in_s']:.2f})")


if __name__ == "__main__":
    main()
