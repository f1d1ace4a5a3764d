"""ZAYA1-8B scale, side by side: zaya-edge int4 vs transformers bf16, plus the bandwidth bound.

Builds (once, cached under .cache/) the full-size random bf16 checkpoint and its int4
artifact, then runs each engine in its own process (both do not fit in RAM together):
`zaya-edge bench` and benchmarks/hf_workload.py, with the same workloads. Finally measures the
machine's streaming-read rate and divides it by the bytes one decode token must read.

    .venv/bin/python benchmarks/bench_full.py [--layers 40] [--runs 3] [--skip-hf] [--block-sizes 32,128]

Each int4 block size is its own artifact (.cache/int4-40l is the default block 32,
.cache/int4-40l-b128 the block-128 variant), benched in turn before transformers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from make_full_checkpoint import make_checkpoint  # noqa: E402


def stream_read_gbps(size_bytes: int = 2 << 30, repeats: int = 5, threads: int = 1) -> float:
    """Median rate of summing a large array (a read-only stream through memory), split
    over `threads` threads (numpy releases the GIL inside the reduction)."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(size_bytes // 8, np.float64)
    parts = np.array_split(a, threads)
    rates = []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            rates.append(size_bytes / (time.perf_counter() - t) / 1e9)
    return float(np.median(rates))


def decode_bytes_per_token(artifact: Path) -> dict:
    """Bytes of weights one batch-1 decode step reads: everything but the unused experts."""
    import onnx

    model = onnx.load(str(artifact / "model.onnx"), load_external_data=False)
    sizes = {}
    for t in model.graph.initializer:
        n = 0
        for e in t.external_data:
            if e.key == "length":
                n = int(e.value)
        sizes[t.name] = n or len(t.raw_data)
    experts = sum(v for k, v in sizes.items() if "mlp.experts" in k)
    manifest = json.loads((artifact / "zaya_edge.json").read_text())
    n_experts = manifest["dims"]["num_experts"]
    total = sum(sizes.values())
    per_token = total - experts + experts / n_experts
    return {"weights_bytes": total, "expert_bytes": experts, "decode_bytes_per_token": int(per_token)}


def run_json(cmd: list[str], log: Path) -> dict:
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    log.write_text(out.stdout + out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--block-sizes", default="32,128", help="int4 artifacts to bench, by block size (32 = the default)")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = ROOT / ".cache" / f"zaya1-random-{args.layers}l"
    if not (ckpt / "model.safetensors.index.json").exists():
        make_checkpoint(ckpt, layers=args.layers)
    results = {"layers": args.layers, "threads": args.threads, "zaya_edge_variants": {}}
    arts = {}
    for block in (int(b) for b in args.block_sizes.split(",")):
        art = ROOT / ".cache" / (f"int4-{args.layers}l" + ("" if block == 32 else f"-b{block}"))
        if not (art / "zaya_edge.json").exists():
            subprocess.run([sys.executable, "-m", "zaya_edge", "export", str(ckpt), "-o", str(art),
                            "--precision", "int4", "--block-size", str(block)], check=True)
        bench_json = args.out / f"zaya_edge_{args.layers}l_b{block}.json"
        subprocess.run([sys.executable, "-m", "zaya_edge", "bench", str(art), "--threads", str(args.threads),
                        "--runs", str(args.runs), "--new-tokens", str(args.new_tokens), "--json", str(bench_json)], check=True)
        results["zaya_edge_variants"][f"int4_b{block}"] = json.loads(bench_json.read_text())
        arts[block] = art
    results["zaya_edge"] = next(iter(results["zaya_edge_variants"].values()))  # the first (default) variant
    if not args.skip_hf:
        results["transformers"] = run_json(
            [sys.executable, str(ROOT / "benchmarks" / "hf_workload.py"), str(ckpt), "--runs", str(args.runs),
             "--threads", str(args.threads), "--new-tokens", str(args.new_tokens)],
            args.out / f"hf_{args.layers}l.log",
        )
    rate1, rate2 = stream_read_gbps(threads=1), stream_read_gbps(threads=2)
    results["bandwidth"] = {"stream_read_gbps_1_thread": rate1, "stream_read_gbps_2_threads": rate2}
    for block, a in arts.items():
        per = decode_bytes_per_token(a)
        per["bound_tok_s_1_thread"] = rate1 * 1e9 / per["decode_bytes_per_token"]
        per["bound_tok_s_2_threads"] = rate2 * 1e9 / per["decode_bytes_per_token"]
        results["bandwidth"][f"int4_b{block}"] = per
    bw = results["bandwidth"]
    (args.out / f"results_{args.layers}l.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({"zaya_edge": {k: v["median"] | {"peak_rss_gib": v["peak_rss_bytes"] / 2**30}
                                    for k, v in results["zaya_edge_variants"].items()},
                      "transformers": results.get("transformers", {}).get("median"),
                      "bandwidth": bw}, indent=2))


if __name__ == "__main__":
    main()
