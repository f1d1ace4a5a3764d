"""Decode milliseconds per step of one artifact under one session setting, without the profiler.

The A/B harness behind BENCHMARKS.md's "predicted vs measured" table: run it alternately on two
artifacts (or settings) several times and compare medians; the VM's speed drifts by ±10 %.

    .venv/bin/python benchmarks/decode_ab.py ARTIFACT [--threads 2] [--batch 1] [--opt all|extended|basic]
        [--config session.intra_op.allow_spinning=0 ...] [--prefill 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from zaya_edge.memory import peak_rss_bytes
from zaya_edge.runtime import session as session_module

LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


def _use_session_options(opt: str, entries: dict[str, str]) -> None:
    """Make the runtime's sessions use optimisation level `opt` and these config entries."""

    class Options(ort.SessionOptions):
        def __setattr__(self, name, value):  # the runtime pins ALL; let this harness override it
            if name == "graph_optimization_level":
                value = LEVELS[opt]
            super().__setattr__(name, value)

        def __init__(self):
            super().__init__()
            for k, v in entries.items():
                self.add_session_config_entry(k, v)

    session_module.ort.SessionOptions = Options


def _random_ids(rng, vocab: int, n: int) -> list[int]:
    return [int(x) for x in rng.integers(16, vocab, n)]


def _prefill_rates(sess, rng, length: int, runs: int = 3) -> list[float]:
    """Tokens per second of `runs` fresh one-prompt prefills."""
    from zaya_edge.runtime.batch import SequenceBatch

    dec, rates = SequenceBatch(sess, 1, length + 8), []
    for _ in range(runs):
        dec.reset()
        t = time.perf_counter()
        dec.admit({0: _random_ids(rng, sess.dims.vocab_size, length)})
        rates.append(length / (time.perf_counter() - t))
    return rates


def _decode_blocks(sess, rng, b: int) -> list[float]:
    """Milliseconds per step of 5 blocks of 20 decode steps, batch `b`, after a warm-up."""
    from zaya_edge.runtime.batch import SequenceBatch

    vocab = sess.dims.vocab_size
    dec = SequenceBatch(sess, b, 512)
    dec.admit({r: _random_ids(rng, vocab, 64) for r in range(b)})
    for _ in range(5):
        dec.step(dict(enumerate(_random_ids(rng, vocab, b))))
    blocks = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            dec.step(dict(enumerate(_random_ids(rng, vocab, b))))
        blocks.append((time.perf_counter() - t) / 20 * 1e3)
    return blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--opt", choices=LEVELS, default="all")
    ap.add_argument("--config", action="append", default=[], help="session config entry KEY=VALUE")
    ap.add_argument("--prefill", type=int, default=0, help="also time 3 prefills of this many tokens")
    args = ap.parse_args()
    entries = dict(kv.split("=", 1) for kv in args.config)
    _use_session_options(args.opt, entries)
    from zaya_edge.runtime.session import DecoderSession

    t0 = time.perf_counter()
    sess = DecoderSession(args.artifact, threads=args.threads)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    prefill = _prefill_rates(sess, rng, args.prefill) if args.prefill else []
    blocks = _decode_blocks(sess, rng, args.batch)
    peak = peak_rss_bytes() / 2**30
    extra = f"; prefill tok/s {[round(x) for x in prefill]}" if prefill else ""
    print(f"{args.artifact} threads {args.threads} batch {args.batch} opt {args.opt} {entries or ''}: load {load_s:.1f} s; "
          f"decode median {statistics.median(blocks):.1f} ms/step {[round(x, 1) for x in blocks]}{extra}; peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
