"""Benchmark (not a test): one MoE layer at ZAYA1-8B shape, ai.zaya::ExpertMoE's native kernel
against onnxruntime's QMoE (the portable graph, which is also the op's function body).

Hidden 2048, 16 experts, intermediate 2048, int4 block 32 (random stored blocks, fp16 scales, as
an artifact stores them), accuracy_level 4. Workloads: decode with 1 and 8 rows (8 rows: chosen
from all 16 experts at random, so a step reads the distinct experts it picks), prefill of 512
tokens. Native and QMoE runs alternate in one process (the VM is shared and noisy: compare the
ratio, not the absolute times); each ISA path runs in its own process (ZAYA_EDGE_CPU_ISA is read
once). Decode is judged against its memory bound: the bytes a step must read as stored (the chosen
experts' blocks and scales) ÷ the streaming-read rate numpy reaches summing a 512 MiB array.

    .venv/bin/python benchmarks/bench_moe.py [--threads 2] [--isa avx512vnni,avxvnni,avx2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

from zaya_edge import custom_ops
from zaya_edge.export.fixtures.moe_layer import MoeLayer, layer_model, random_layer, random_routes, save_layer

H, E, I, BLOCK = 2048, 16, 2048, 32
WORKLOADS = (("decode 1 row", 1), ("decode 8 rows", 8), ("prefill 512", 512))


def session(model, native: bool, threads: int):
    """Spinning off: two sessions alternate in one process, and a pool spinning after its run would
    take the other's cores (2 here)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if native:
        custom_ops.register(so)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def interleaved(runs: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds of each callable, run alternately."""
    times = {name: [] for name in runs}
    for i in range(warmup + repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def read_rate(threads: int = 1, mib: int = 512, repeats: int = 5) -> float:
    """Bytes/s numpy streams summing an array of `mib` MiB, split over `threads` threads (numpy
    releases the GIL in the reduction), median of `repeats`."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(mib << 18, np.float32)
    parts = np.array_split(a, threads)
    times = []
    with ThreadPoolExecutor(threads) as pool:
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))
            if i:
                times.append(time.perf_counter() - t0)
    return a.nbytes / statistics.median(times)


def gemm_rate(repeats: int = 5) -> float:
    """FLOP/s numpy's fp32 matmul reaches on a prefill-sized product ([512, 2048] x [2048, 4096],
    OpenBLAS on every core), median of `repeats`: the issue's prefill yardstick (target 2x)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((512, H), np.float32), rng.random((H, 2 * I), np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / statistics.median(times)


def step_bytes(layer, feeds) -> int:
    """Bytes one call must read as stored: every chosen expert's blocks and scales, once."""
    chosen = {int(e) for e, w in zip(feeds["expert_select"].argmax(1), feeds["expert_weight"].max(1)) if w > 0}
    return len(chosen) * layer.expert_bytes()


def feed_cycle(rng, layer, n: int, count: int = 16) -> list[dict]:
    """`count` different calls of n tokens. Decode rotates its experts (1 row: expert i in call i), so
    a call does not find the last call's expert in the 32 MB L3 (16 experts are 113 MB): as in a
    model, whose 40 layers each read their own experts."""
    calls = [random_routes(rng, layer, n=n, skip=0.0) for _ in range(count)]
    if n == 1:
        for i, f in enumerate(calls):
            f["expert_select"][:] = 0.0
            f["expert_select"][0, i % layer.experts] = 1.0
            f["expert_weight"][:] = 0.5 * f["expert_select"]
    return calls


def cycling(sess, calls: list[dict]):
    it = iter(range(1 << 62))
    return lambda: sess.run(None, calls[next(it) % len(calls)])


def run_isa(threads: int, repeats: int) -> dict:
    """This process's figures (its ISA path is fixed by ZAYA_EDGE_CPU_ISA)."""
    rng = np.random.default_rng(0)
    layer = random_layer(rng, hidden=H, experts=E, inter=I, block=BLOCK)
    model = layer_model(layer)
    native, qmoe = session(model, True, threads), session(layer_model(layer, portable=True), False, threads)
    out = {"isa": _library_isa(), "rows": []}
    for name, n in WORKLOADS:
        calls = feed_cycle(rng, layer, n) if n <= 8 else [random_routes(rng, layer, n=n, skip=0.0)]
        reps = repeats * (8 if n <= 8 else 1)
        t = interleaved({"native": cycling(native, calls), "qmoe": cycling(qmoe, calls)}, reps)
        flops = 2 * 3 * H * I * n  # fc1 (2I x H) and fc2 (H x I) per token
        nbytes = statistics.median(step_bytes(layer, f) for f in calls)
        out["rows"].append({"workload": name, "n": n, "native_s": t["native"], "qmoe_s": t["qmoe"],
                            "bytes": nbytes, "flops": flops})
    return out


def rss_of(path: str, native: bool, threads: int) -> int:
    """Bytes of resident memory a session over the saved layer holds after a 512-token call (a
    fresh process: RSS after minus before), as an artifact's weights load (external data)."""
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    feeds = random_routes(np.random.default_rng(1), MoeLayer(H, E, I, BLOCK, "silu", {}), n=512, skip=0.0)
    base = rss()
    sess = session(path, native, threads)
    sess.run(None, feeds)
    return rss() - base


def _library_isa() -> str:
    import ctypes

    info = custom_ops.library_info()
    fn = ctypes.CDLL(str(info.path)).ZayaCustomOpsMoeIsa
    fn.restype = ctypes.c_char_p
    return fn().decode()


def report(results: list[dict], rates: dict, threads: int, gemm: float) -> None:
    rate = rates[threads]
    print(f"streaming read (numpy sum of 512 MiB): " + ", ".join(f"{r / 1e9:.1f} GB/s with {t} thread{'s' * (t > 1)}"
                                                                 for t, r in rates.items())
          + f"; sessions run {threads} threads, the bound uses the rate at {threads}")
    print(f"{'ISA':11} {'workload':14} {'native ms':>9} {'QMoE ms':>8} {'QMoE/native':>11}  decode bound / prefill rate")
    for res in results:
        for r in res["rows"]:
            line = f"{res['isa']:11} {r['workload']:14} {r['native_s'] * 1e3:9.2f} {r['qmoe_s'] * 1e3:8.2f} " \
                   f"{r['qmoe_s'] / r['native_s']:10.2f}x  "
            if r["n"] <= 8:
                bound = r["bytes"] / rate
                line += (f"{r['bytes'] / 1e6:.1f} MB as stored -> bound {bound * 1e3:.2f} ms; "
                         f"measured/bound: native {bound / r['native_s']:.0%}, QMoE {bound / r['qmoe_s']:.0%}")
            else:
                native = r["flops"] / r["native_s"]
                line += (f"native {native / 1e9:.0f} GFLOP/s, QMoE {r['flops'] / r['qmoe_s'] / 1e9:.0f} GFLOP/s; "
                         f"measured/target (2x numpy fp32): native {native / (2 * gemm):.0%}")
            print(line)
    print(f"numpy fp32 GEMM ([512, 2048] x [2048, 4096]): {gemm / 1e9:.0f} GFLOP/s. QMoE runs onnxruntime's own best "
          "kernel in every row (ZAYA_EDGE_CPU_ISA picks ExpertMoE's only)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--isa", default="avx512vnni,avxvnni,avx2", help="ISA paths to force, one process each")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rss", help=argparse.SUPPRESS)
    args = p.parse_args()
    if custom_ops.find_library() is None:
        sys.exit("custom-op library not built (make custom-ops)")
    if args.rss:
        path, kind = args.rss.rsplit(":", 1)
        print(json.dumps(rss_of(path, kind == "native", args.threads)))
        return
    if args.child:
        print(json.dumps(run_isa(args.threads, args.repeats)))
        return
    results = []
    for isa in args.isa.split(","):
        env = {**os.environ, "ZAYA_EDGE_CPU_ISA": isa}
        cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res["isa"] != isa:
            print(f"(asked for {isa}: this CPU runs {res['isa']})")
        results.append(res)
    report(results, {t: read_rate(t) for t in sorted({1, args.threads})}, args.threads, gemm_rate())
    report_rss(args.threads)


def report_rss(threads: int) -> None:
    """Resident memory of each session over the layer saved as an artifact saves it."""
    layer = random_layer(np.random.default_rng(0), hidden=H, experts=E, inter=I, block=BLOCK)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"native": f"{tmp}/fused.onnx", "qmoe": f"{tmp}/portable.onnx"}
        save_layer(layer, paths["native"])
        save_layer(layer, paths["qmoe"], portable=True)
        for kind, path in paths.items():
            cmd = [sys.executable, __file__, "--rss", f"{path}:{kind}", "--threads", str(threads)]
            held = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            print(f"resident memory of the {kind:6} session: {held / 2**20:6.1f} MiB for {layer.stored_bytes / 2**20:.1f} MiB "
                  f"of stored blocks ({held / layer.stored_bytes:.2f}x)")


if __name__ == "__main__":
    main()
