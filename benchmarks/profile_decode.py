"""Where a decode step's time goes: onnxruntime's profiler per op type, and the Python time
spent outside the session call (binding, mask, bookkeeping).

    .venv/bin/python benchmarks/profile_decode.py ARTIFACT [--threads 1] [--batch 1] [--steps 10]
    .venv/bin/python benchmarks/profile_decode.py ARTIFACT --prefill 512   # one prompt's prefill instead

One thread gives stable figures on a shared machine; per-layer costs extrapolate to 40 layers.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numpy as np
import onnxruntime as ort

from zaya_edge.runtime import session as session_module
from zaya_edge.runtime.batch import SequenceBatch
from zaya_edge.runtime.session import DecoderSession


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--context", type=int, default=64, help="prompt length before the profiled decode steps")
    ap.add_argument("--prefill", type=int, default=0, help="profile prefills of this many tokens instead of decode steps")
    args = ap.parse_args()

    class ProfilingOptions(ort.SessionOptions):
        def __init__(self):
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = "/tmp/zaya_edge_decode_profile"

    session_module.ort.SessionOptions = ProfilingOptions  # profile the runtime's own session
    sess = DecoderSession(args.artifact, threads=args.threads)
    dec = SequenceBatch(sess, args.batch, max(512, args.prefill + 64, args.context + args.steps + 8))
    rng = np.random.default_rng(0)
    vocab = sess.dims.vocab_size

    def prompts(length: int) -> dict[int, list[int]]:
        return {r: [int(x) for x in rng.integers(16, vocab, length)] for r in range(args.batch)}

    def step() -> None:
        dec.step(dict(enumerate(int(x) for x in rng.integers(16, vocab, args.batch))))

    dec.admit(prompts(args.context))
    for _ in range(3):  # warm-up
        step()

    run = sess.session.run_with_iobinding
    in_run = [0.0]

    def timed(binding, *a):
        t = time.perf_counter()
        run(binding, *a)
        in_run[0] += time.perf_counter() - t

    sess.session.run_with_iobinding = timed
    start = time.perf_counter()
    for _ in range(args.steps):
        if args.prefill:
            dec.reset()
            dec.admit(prompts(args.prefill))
        else:
            step()
    total = time.perf_counter() - start
    _report(json.load(open(sess.session.end_profiling())), args.steps, total, in_run[0])


def _report(events: list[dict], n: int, total: float, in_run: float) -> None:
    """Per-op kernel time of the last `n` session runs, and the Python time around them."""
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    since = runs[-n]["ts"]
    by_op, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= since:
            by_op[e["args"].get("op_name")] += e["dur"]
            count[e["args"].get("op_name")] += 1
    print(f"step {total / n * 1e3:.2f} ms; in session.run {in_run / n * 1e3:.2f} ms; "
          f"Python outside it {(total - in_run) / n * 1e3:.3f} ms; nodes per step {sum(count.values()) / n:.0f}")
    for op, us in by_op.most_common(15):
        print(f"  {op:30s} {us / n / 1e3:8.3f} ms/step  ({count[op] / n:.0f} nodes)")

if __name__ == "__main__":
    main()
