"""Benchmark (not a test): the native ai.zaya::Router kernel against its ONNX function body.

1. the Router op alone at ZAYA1-8B shapes (hidden 2048, router hidden 256, 16 experts + skip),
   weights as initializers (as in an artifact), for several token counts;
2. one full decode step of a random model of ZAYA1-8B width (fp32, a few layers, small vocab),
   after a prompt, exported by zaya_edge.export.

Native and fallback runs are interleaved in one process and medians printed (the VM's timings
swing run to run). Needs the custom-op library (make custom-ops) and, for part 2, the export extra.

    .venv/bin/python benchmarks/bench_router.py [--threads 1,2] [--layers 2] [--skip-decode]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from zaya_edge import custom_ops  # noqa: E402

H, R, E = 2048, 256, 16


def make_session(model, native: bool, threads: int):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    if native:
        custom_ops.register(so)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def interleaved(runs: dict, repeats: int, warmup: int = 3) -> dict:
    """Median seconds of each callable, run alternately."""
    times = {name: [] for name in runs}
    for i in range(warmup + repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_router_op(threads: int) -> None:
    from test_custom_ops_router import random_weights, router_model

    rng = np.random.default_rng(0)
    weights = random_weights(rng, H, R, E, first_layer=False, skip_bias=-1.0)
    model = router_model(weights=weights)
    fallback, native = make_session(model, False, threads), make_session(model, True, threads)
    print(f"\nRouter op alone, H={H} R={R} classes={E + 1}, {threads} thread(s), median ms")
    print(f"{'tokens':>8} {'fallback':>10} {'native':>10} {'speed-up':>9}")
    for n in (1, 4, 16, 64, 128, 512):
        feeds = {"x": rng.standard_normal((n, H)).astype(np.float32),
                 "prev_state": rng.standard_normal((n, R)).astype(np.float32)}
        med = interleaved({"fallback": lambda: fallback.run(None, feeds), "native": lambda: native.run(None, feeds)},
                          repeats=200 if n <= 64 else 50)
        print(f"{n:>8} {med['fallback'] * 1e3:>10.3f} {med['native'] * 1e3:>10.3f} {med['fallback'] / med['native']:>8.2f}x")


def bench_decode_step(thread_counts: list[int], layers: int, vocab: int, prompt: int) -> None:
    import torch

    from zaya_edge.export import export_model
    from zaya_edge.export.fixtures.random_model import tiny_model

    torch.set_num_threads(max(thread_counts))
    model = tiny_model(
        seed=0, hidden_size=H, num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2,
        head_dim=128, num_experts=E, moe_intermediate_size=2048, router_hidden_size=R, vocab_size=vocab,
        max_position_embeddings=4096, initializer_range=0.02,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "art"
        t0 = time.perf_counter()
        export_model(model, folder, precision="fp32", progress=False)
        print(f"\n(exported {layers} full-width fp32 layers, vocab {vocab}, in {time.perf_counter() - t0:.0f} s)")
        del model
        gc.collect()
        for threads in thread_counts:
            _decode_and_prefill(folder, threads, layers, vocab, prompt)


def _decode_and_prefill(folder, threads, layers, vocab, prompt):
    from ort_decoder import OrtDecoder
    from zaya_edge.artifact import MODEL_FILE

    fallback = OrtDecoder(folder)
    fallback.session = make_session(str(folder / MODEL_FILE), False, threads)
    native = OrtDecoder(folder)
    native.session = make_session(str(folder / MODEL_FILE), True, threads)
    assert custom_ops.router_path(native.session).native
    rng = np.random.default_rng(1)
    ids = rng.integers(4, vocab, (1, prompt))
    _, state = fallback.step(ids, np.ones_like(ids), fallback.zero_state(1))
    nxt = rng.integers(4, vocab, (1, 1))
    mask = np.ones((1, prompt + 1), np.int64)
    a, _ = fallback.step(nxt, mask, state)
    b, _ = native.step(nxt, mask, state)
    print(f"\none decode step after a {prompt}-token prompt, {threads} thread(s), median ms "
          f"(max |logit diff| native vs fallback {np.abs(a - b).max():.1e})")
    med = interleaved({"fallback": lambda: fallback.step(nxt, mask, state),
                       "native": lambda: native.step(nxt, mask, state)}, repeats=100, warmup=5)
    per_layer = (med["fallback"] - med["native"]) / layers * 1e3
    print(f"{'fallback':>10} {'native':>10} {'saved/layer':>12}")
    print(f"{med['fallback'] * 1e3:>10.2f} {med['native'] * 1e3:>10.2f} {per_layer:>9.3f} ms")
    pids = rng.integers(4, vocab, (1, 128))
    pmask = np.ones_like(pids)
    med = interleaved({"fallback": lambda: fallback.step(pids, pmask, fallback.zero_state(1)),
                       "native": lambda: native.step(pids, pmask, native.zero_state(1))}, repeats=7, warmup=1)
    print(f"prefill of 128 tokens: fallback {med['fallback'] * 1e3:.1f} ms, native {med['native'] * 1e3:.1f} ms")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="intra-op thread counts to measure, comma-separated")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers of the decode-step model (each ~0.8 GB fp32)")
    ap.add_argument("--vocab", type=int, default=4096, help="vocab of the decode-step model (ZAYA1-8B: 262272)")
    ap.add_argument("--prompt", type=int, default=64, help="prompt length before the timed decode step")
    ap.add_argument("--skip-decode", action="store_true", help="only the Router op")
    args = ap.parse_args()
    info = custom_ops.library_info()
    if info is None:
        sys.exit("custom-op library not built: make custom-ops")
    print(f"onnxruntime {ort.__version__}; {info}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    for threads in thread_counts:
        bench_router_op(threads)
    if not args.skip_decode:
        bench_decode_step(thread_counts, args.layers, args.vocab, args.prompt)


if __name__ == "__main__":
    main()
