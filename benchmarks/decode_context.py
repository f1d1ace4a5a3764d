"""Decode speed against context length: what one token of decode pays per layer per 1K tokens of
context, against issue 15's target (1.4x the time to read 1K tokens of an fp16 cache).

    .venv/bin/python benchmarks/decode_context.py ARTIFACT [ARTIFACT ...] [--contexts 256,4096,16384]
        [--steps 16] [--threads 2] [--paths native,fallback]

For each artifact, kernel path (the native ai.zaya kernels or the ONNX function bodies, i.e.
GroupQueryAttention) and context: one prompt of `context` random tokens is prefilled as the runtime
does it (512-token chunks; its rate is printed too), then `steps` batch-1 decode steps are timed
(median). The slope from the shortest to the longest context, over the layers, is the cost per
layer per 1K tokens of context; an fp16 cache holds num_kv_heads x head_dim x 2 (K, V) x 2 bytes
per token per layer (1 MiB per 1K tokens at ZAYA1-8B), read at the measured streaming-read rate.
The paths' decode steps are taken in turn within one process, so their ratios come from one
machine state.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_full import stream_read_gbps  # noqa: E402
from rsa_round import cpu_flags  # noqa: E402

from zaya_edge.runtime.batch import SequenceBatch  # noqa: E402
from zaya_edge.runtime.session import DecoderSession  # noqa: E402

TARGET_RATIO = 1.4  # issue 15: per-layer per-1K decode cost <= 1.4x one read of 1K fp16 cache tokens


def measure(sessions: dict, context: int, steps: int, seed: int) -> dict:
    """Per session: prefill `context` random tokens, then `steps` greedy decode steps (batch 1),
    the sessions' steps taken in turn so that a change in the machine's load hits them alike."""
    vocab = next(iter(sessions.values())).dims.vocab_size
    prompt = np.random.default_rng(seed).integers(3, vocab, context).tolist()
    state, out = {}, {}
    for name, session in sessions.items():
        batch = SequenceBatch(session, slots=1, capacity=context + steps + 8)
        t0 = time.perf_counter()
        logits = batch.admit({0: prompt})[0]
        out[name] = {"context": context, "prefill_tok_s": context / (time.perf_counter() - t0), "times": []}
        state[name] = (batch, logits)
    for _ in range(steps):
        for name, (batch, logits) in state.items():
            t = time.perf_counter()
            logits = batch.step({0: int(np.argmax(logits))})[0]
            out[name]["times"].append(time.perf_counter() - t)
            state[name] = (batch, logits)
    for row in out.values():
        row["step_ms"] = 1e3 * statistics.median(row.pop("times"))
    return out


def report(name: str, path: str, rows: list[dict], session: DecoderSession, read_gbps: float) -> None:
    d = session.dims
    lo, hi = rows[0], rows[-1]
    per_1k = (hi["step_ms"] - lo["step_ms"]) / max(d.num_layers, 1) / ((hi["context"] - lo["context"]) / 1024)
    fp16_read_ms = d.num_kv_heads * d.head_dim * 2 * 2 * 1024 / (read_gbps * 1e9) * 1e3
    target = TARGET_RATIO * fp16_read_ms
    print(f"\n{name} [{path}] kv cache {session.manifest.kv_dtype}, {d.num_layers} layers")
    print(f"{'context':>8} {'decode ms/token':>16} {'decode tok/s':>13} {'prefill tok/s':>14}")
    for r in rows:
        print(f"{r['context']:>8} {r['step_ms']:>16.2f} {1e3 / r['step_ms']:>13.1f} {r['prefill_tok_s']:>14.0f}")
    print(f"per layer per 1K context: {per_1k:.4f} ms / target {target:.4f} ms "
          f"(1.4 x {fp16_read_ms:.4f} ms fp16 read)  {'met' if per_1k <= target else 'NOT met'}")
    print(f"decode at {hi['context']} / decode at {lo['context']}: {lo['step_ms'] / hi['step_ms']:.2f} (target >= 0.60)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--contexts", default="256,4096,16384")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", default="native,fallback", help="native (ai.zaya kernels) and/or fallback (function bodies)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    contexts = [int(c) for c in args.contexts.split(",")]
    read = stream_read_gbps(512 << 20, threads=1)
    print(f"CPU flags: {' '.join(cpu_flags())}; streaming read {read:.1f} GB/s (1 thread); {args.threads} threads")
    for path in args.artifacts:
        sessions = {p: DecoderSession(path, threads=args.threads, custom_ops=None if p == "native" else False)
                    for p in args.paths.split(",")}
        rows = {p: [] for p in sessions}
        measure(sessions, 64, 4, args.seed)  # the first calls of a session page weights in: not timed
        for context in contexts:
            for p, row in measure(sessions, context, args.steps, args.seed).items():
                rows[p].append(row)
        for p, session in sessions.items():
            report(p, path, rows[p], session, read)


if __name__ == "__main__":
    main()
