"""ai.zaya::CachedAttention alone at ZAYA1-8B's heads (8 query / 2 kv x 128) against onnxruntime's
GroupQueryAttention: a decode step (batch 1 and 8) and a 512-token prefill chunk at several contexts.

    .venv/bin/python benchmarks/bench_attention.py [--threads 2] [--contexts 256,4096,16384] [--repeats 15]

Variants, each a one-node session over a shared (in-place) cache buffer as the runtime binds it:
  gqa-bias    GroupQueryAttention fp32 with the [B,1,S,T] key-padding bias (the graph before
              CachedAttention, and CachedAttention's function body over an fp32 cache)
  gqa         GroupQueryAttention fp32 without the bias (its fast path; cannot mask left padding)
  native-f32  the native kernel over an fp32 cache
  native-f16  the native kernel over an fp16 cache (the int4 export's default)
Decode times are compared with the time one read of the cache takes at the measured streaming-read
rate; the variants run in turn inside each repeat (best of --repeats), so their ratios share the
machine's state.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_full import stream_read_gbps  # noqa: E402

from zaya_edge import custom_ops  # noqa: E402

HQ, HKV, D = 8, 2, 128
VARIANTS = ("gqa-bias", "gqa", "native-f32", "native-f16")


def _model(variant: str) -> bytes:
    f = TensorProto.FLOAT
    cache = TensorProto.FLOAT16 if variant == "native-f16" else f
    ins = [helper.make_tensor_value_info(n, f, ["B", "S", h * D]) for n, h in (("q", HQ), ("k", HKV), ("v", HKV))]
    ins += [helper.make_tensor_value_info(n, cache, ["B", HKV, "C", D]) for n in ("pk", "pv")]
    outs = [helper.make_tensor_value_info("o", f, ["B", "S", HQ * D])]
    outs += [helper.make_tensor_value_info(n, cache, ["B", HKV, "C", D]) for n in ("ok", "ov")]
    if variant.startswith("native"):
        ins.append(helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", "T"]))
        node = helper.make_node("CachedAttention", ["q", "k", "v", "pk", "pv", "mask"], ["o", "ok", "ov"],
                                domain="ai.zaya", num_heads=HQ, kv_num_heads=HKV, scale=D ** -0.5)
    else:
        ins += [helper.make_tensor_value_info("sk", TensorProto.INT32, ["B"]),
                helper.make_tensor_value_info("tot", TensorProto.INT32, [])]
        names = ["q", "k", "v", "pk", "pv", "sk", "tot"]
        if variant == "gqa-bias":
            ins.append(helper.make_tensor_value_info("bias", f, ["B", 1, "S", "T"]))
            names += ["", "", "", "bias"]
        node = helper.make_node("GroupQueryAttention", names, ["o", "ok", "ov"], domain="com.microsoft",
                                num_heads=HQ, kv_num_heads=HKV, scale=D ** -0.5)
    graph = helper.make_graph([node], variant, ins, outs)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("ai.zaya", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _bound(variant: str, threads: int, lib) -> tuple:
    """(session, binder) for a variant; binder(batch, seq, total) returns a ready IOBinding."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if variant.startswith("native"):
        custom_ops.register(so, lib)
    sess = ort.InferenceSession(_model(variant), so, providers=["CPUExecutionProvider"])
    dtype = np.float16 if variant == "native-f16" else np.float32
    keep = []

    def binder(b: int, s: int, t: int):
        rng = np.random.default_rng(0)
        cache = [rng.standard_normal((b, HKV, t, D)).astype(dtype) for _ in range(2)]
        feeds = {n: rng.standard_normal((b, s, h * D)).astype(np.float32) for n, h in (("q", HQ), ("k", HKV), ("v", HKV))}
        if variant.startswith("native"):
            feeds["mask"] = np.ones((b, t), np.int64)
        else:
            feeds.update(sk=np.full(b, t - 1, np.int32), tot=np.array(t, np.int32))
            if variant == "gqa-bias":
                feeds["bias"] = np.zeros((b, 1, s, t), np.float32)
        io = sess.io_binding()
        for n, a in feeds.items():
            io.bind_cpu_input(n, a)
        for (pn, on), a in zip((("pk", "ok"), ("pv", "ov")), cache):
            io.bind_input(pn, "cpu", 0, dtype, list(a.shape), a.ctypes.data)
            io.bind_output(on, "cpu", 0, dtype, list(a.shape), a.ctypes.data)
        io.bind_output("o", "cpu")
        keep.append((cache, feeds))
        return io

    return sess, binder


def _time(cases: dict, repeats: int) -> dict:
    """Best-of-repeats ms per variant, the variants run in turn each repeat."""
    best = {k: float("inf") for k in cases}
    for sess, io in cases.values():
        sess.run_with_iobinding(io)
    for _ in range(repeats):
        for k, (sess, io) in cases.items():
            t = time.perf_counter()
            sess.run_with_iobinding(io)
            best[k] = min(best[k], (time.perf_counter() - t) * 1e3)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contexts", default="256,4096,16384")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    lib = custom_ops.find_library()
    if lib is None:
        sys.exit("no custom-op library: make custom-ops")
    sessions = {v: _bound(v, args.threads, lib) for v in VARIANTS}
    read = stream_read_gbps(512 << 20, threads=args.threads)
    print(f"{args.threads} threads; streaming read {read:.1f} GB/s with {args.threads} threads; ms per call, best of {args.repeats}")
    for b, s, label in ((1, 1, "decode, batch 1"), (8, 1, "decode, batch 8"), (1, 512, "prefill chunk of 512")):
        print(f"\n{label}:  context  " + "  ".join(f"{v:>11}" for v in VARIANTS) + "   fp16 read")
        for t in (int(c) for c in args.contexts.split(",")):
            cases = {v: (sess, binder(b, s, max(t, s))) for v, (sess, binder) in sessions.items()}
            ms = _time(cases, args.repeats)
            read_ms = b * HKV * t * D * 2 * 2 / (read * 1e9) * 1e3
            print(f"{'':>22}{t:>7}  " + "  ".join(f"{ms[v]:>11.3f}" for v in VARIANTS) + f"  {read_ms:>9.3f}")


if __name__ == "__main__":
    main()
