"""One Markovian RSA aggregation round at ZAYA1-8B shape: zaya-edge int4 vs a transformers bf16 loop.

The edge preset's round shape (N = 8 candidates, each prompt showing C = 4 tails of τ = 4,096
tokens: ~16.5K-token prompts) with β shortened to --decode-tokens, on random weights. zaya-edge
runs it through MarkovianRSA.solve (benchmarks/rsa_round_edge.py); transformers runs the same
prompt ids for the same token counts in a plain loop (benchmarks/rsa_round_hf.py). Each engine
runs in its own process (both do not fit in RAM together); each also reports the batch-1 decode
rate at --contexts. The checkpoint and artifact are bench_full.py's, built once under .cache/.

    .venv/bin/python benchmarks/rsa_round.py                      # full scale: see BENCHMARKS.md for its time
    .venv/bin/python benchmarks/rsa_round.py --layers 2 --tau 256 --decode-tokens 8 --contexts 256,1024
    .venv/bin/python benchmarks/rsa_round.py --profile            # + onnxruntime's profile of a 16K prefill

Targets are printed as measured / target lines, relative to this machine: its ISA flags and its
streaming-read rate (bench_full.stream_read_gbps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_full import run_json, stream_read_gbps  # noqa: E402
from make_full_checkpoint import make_checkpoint  # noqa: E402

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16")
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
FP16_CACHE_BYTES_PER_LAYER_PER_1K = 2 * 128 * 2 * 2 * 1024  # kv heads x head dim x (K, V) x fp16 x 1K = 1 MiB
GIB = 2**30


def cpu_flags() -> list[str]:
    """The ISA flags of ISA_FLAGS that this CPU has (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in ISA_FLAGS if f in have]


def word_tokenizer(vocab: int, folder: Path) -> Path:
    """A tokenizer.json whose words are token ids ("w123" is token 123), written once: a random
    tail of τ tokens decodes and re-encodes to exactly τ tokens. Other words are one unknown token."""
    path = folder / f"words-{vocab}.json"
    if not path.exists():
        from tokenizers import Tokenizer, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w1"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        folder.mkdir(parents=True, exist_ok=True)
        tok.save(str(path))
    return path


def build(args) -> tuple[Path, Path]:
    """bench_full.py's random checkpoint and int4 artifact (block 32) for --layers, made if missing."""
    ckpt = args.checkpoint or ROOT / ".cache" / f"zaya1-random-{args.layers}l"
    art = args.artifact or ROOT / ".cache" / f"int4-{args.layers}l"
    if not (ckpt / "model.safetensors.index.json").exists():
        make_checkpoint(ckpt, layers=args.layers)
    if not (art / "zaya_edge.json").exists():
        subprocess.run([sys.executable, "-m", "zaya_edge", "export", str(ckpt), "-o", str(art),
                        "--precision", "int4", "--quiet"], check=True)
    return ckpt, art


def _run(cmd: list[str], log: Path) -> dict:
    """bench_full.run_json, with the child's last lines of stderr when it fails."""
    try:
        return run_json(cmd, log)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{Path(cmd[1]).name} failed ({exc.returncode}):\n" + "\n".join(exc.stderr.splitlines()[-15:]))


def run_engines(args, ckpt: Path, art: Path) -> dict:
    """Each engine in its own process; zaya-edge first (it writes the prompts transformers reads)."""
    out = args.out
    common = ["--contexts", args.contexts, "--decode-tokens", str(args.decode_tokens), "--threads", str(args.threads),
              "--seed", str(args.seed)]
    dims = json.loads((art / "zaya_edge.json").read_text())["dims"]
    words = word_tokenizer(dims["vocab_size"], ROOT / ".cache" / "rsa-round")
    prompts = out / f"rsa_round_prompts_{args.layers}l.json"
    edge = [sys.executable, str(ROOT / "benchmarks" / "rsa_round_edge.py"), str(art), "--tokenizer", str(words)]
    results = {"zaya_edge": _run(edge + common + [
        "--prompts", str(prompts), "--population", str(args.population), "--tails", str(args.tails),
        "--tau", str(args.tau), "--max-memory", args.max_memory], out / f"rsa_round_edge_{args.layers}l.log")}
    if args.profile:
        length = max(int(c) for c in args.contexts.split(","))
        results["profile"] = _run(edge + ["--threads", str(args.threads), "--profile-prefill", str(length)],
                                      out / f"rsa_round_profile_{args.layers}l.log")["profile"]
    if not args.skip_hf:
        hf = [sys.executable, str(ROOT / "benchmarks" / "rsa_round_hf.py"), str(ckpt), "--prompts", str(prompts),
              "--chunk", str(args.hf_chunk)]
        results["transformers"] = _run(hf + common, out / f"rsa_round_hf_{args.layers}l.log")
    return results


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def target_lines(r: dict, layers: int) -> list[str]:
    """measured / target lines for the issue's goals (a goal needing a skipped part says so)."""
    edge, hf, rate = r["zaya_edge"], r.get("transformers"), r["bandwidth"]["stream_read_gbps"]
    sweep = edge["contexts"]
    lo, hi = sweep[0], sweep[-1]
    per_1k = (1 / hi["decode_tok_s"] - 1 / lo["decode_tok_s"]) / ((hi["context"] - lo["context"]) / 1024) / layers
    bound = 1.4 * FP16_CACHE_BYTES_PER_LAYER_PER_1K / (rate * 1e9)
    kept = hi["decode_tok_s"] / lo["decode_tok_s"]
    lines = [f"decode time a token adds per layer per 1K context  {per_1k * 1e6:8.1f} us / target <= {bound * 1e6:.1f} us "
             f"(1.4 x 1 MiB fp16 cache at {rate:.1f} GB/s)  {'met' if per_1k <= bound else 'NOT met'}",
             f"decode at {hi['context']} / decode at {lo['context']} context        {kept:8.1%} / target >= 60 %  "
             f"{'met' if kept >= 0.6 else 'NOT met'}"]
    if hf is None:
        lines.append("round speed-up, peak RSS and prefill vs transformers: skipped (--skip-hf)")
    else:
        speedup = hf["round"]["wall_s"] / edge["round"]["wall_s"]
        rss, hf_rss = edge["peak_rss_bytes"], hf["peak_rss_bytes"]
        prefill = _ratio(edge["round"]["prefill_tok_s"], hf["round"]["prefill_tok_s"])
        native = bool(set(r["cpu_flags"]) & set(NATIVE_BF16))
        lines += [f"aggregation round vs transformers loop          {speedup:8.2f} x / target >= 4 x  {'met' if speedup >= 4 else 'NOT met'}",
                  f"peak RSS vs transformers                        {rss / GIB:8.2f} GiB / target < {hf_rss / GIB:.2f} GiB  "
                  f"{'met' if rss < hf_rss else 'NOT met'}",
                  f"prefill at ~{_mean(edge['round']['prompt_tokens']):.0f} context vs transformers bf16     {prefill:8.2f} x / target >= 2 x"
                  + (f"  {'met' if prefill >= 2 else 'NOT met'}" if native else "  (no native bf16 here: not a target)")]
    if "profile" in r:
        share = r["profile"]["attention_share"]
        lines.append(f"attention share of a {r['profile']['tokens']}-token prefill (ORT profile) {share:8.1%} / target <= 55 %  "
                     f"{'met' if share <= 0.55 else 'NOT met'}")
    return lines


def _mean(values) -> float:
    return sum(values) / len(values)


def table(r: dict) -> list[str]:
    """The side-by-side figures: the round, then batch-1 decode at each context."""
    engines = [("zaya-edge int4", r["zaya_edge"])] + ([("transformers bf16", r["transformers"])] if "transformers" in r else [])
    rows = [("round wall time (s)", lambda e: f"{e['round']['wall_s']:.1f}"),
            ("round prefill tok/s", lambda e: f"{e['round']['prefill_tok_s']:.1f}"),
            ("round decode tok/s (aggregate)", lambda e: f"{e['round']['decode_tok_s']:.2f}"),
            ("peak RSS (GiB)", lambda e: f"{e['peak_rss_bytes'] / GIB:.2f}")]
    for k, point in enumerate(r["zaya_edge"]["contexts"]):
        rows.append((f"decode tok/s, batch 1, context ~{point['context']}",
                     lambda e, k=k: f"{e['contexts'][k]['decode_tok_s']:.2f}"))
    head = f"{'':44s}" + "".join(f"{name:>20s}" for name, _ in engines)
    return [head] + [f"{label:44s}" + "".join(f"{fmt(e):>20s}" for _, e in engines) for label, fmt in rows]


def report(r: dict, args) -> str:
    edge = r["zaya_edge"]["round"]
    lines = [f"Markovian RSA aggregation round: N={args.population} C={args.tails} tau={args.tau} "
             f"beta={args.decode_tokens} (shortened), {args.layers} layers, {args.threads} threads",
             f"prompts: {len(edge['prompt_tokens'])} of {min(edge['prompt_tokens'])}-{max(edge['prompt_tokens'])} tokens; "
             f"zaya-edge ran {edge['waves']} wave(s) (max_memory {edge['max_memory']}), cache {edge['cache_bytes'] / GIB:.2f} GiB",
             f"CPU ISA flags: {' '.join(r['cpu_flags']) or 'none of ' + ', '.join(ISA_FLAGS)}; "
             f"streaming read {r['bandwidth']['stream_read_gbps']:.1f} GB/s ({args.threads} threads)",
             "transformers: one prompt at a time (batch 1), prefilled in chunks of "
             f"{args.hf_chunk}; zaya-edge's round decode is the whole wave's aggregate", ""]
    lines += table(r) + [""] + target_lines(r, args.layers)
    if "profile" in r:
        ops = r["profile"]["ops"]
        lines.append("prefill kernel time by op: " + ", ".join(f"{op} {s:.1f} s" for op, s in list(ops.items())[:6]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--population", "-N", type=int, default=8)
    ap.add_argument("--tails", "-C", type=int, default=4)
    ap.add_argument("--tau", type=int, default=4096)
    ap.add_argument("--decode-tokens", type=int, default=32, help="β, shortened: tokens each candidate decodes")
    ap.add_argument("--contexts", default="256,4096,16384", help="contexts of the batch-1 decode rates")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path, help="default: .cache/zaya1-random-<layers>l (bench_full.py's)")
    ap.add_argument("--artifact", type=Path, help="default: .cache/int4-<layers>l (bench_full.py's)")
    ap.add_argument("--max-memory", default="auto", help="GiB of zaya-edge cache for the round: a number, auto, none")
    ap.add_argument("--hf-chunk", type=int, default=2048, help="transformers prefill chunk (0 = whole prompts)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also profile a prefill of the largest context")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench")
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    if len(contexts) < 2 or contexts != sorted(set(contexts)):
        ap.error("--contexts takes two or more increasing sizes (one cache is extended from each to the next)")
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt, art = build(args)
    results = run_engines(args, ckpt, art)
    results["cpu_flags"] = cpu_flags()
    results["bandwidth"] = {"stream_read_gbps": stream_read_gbps(threads=args.threads), "threads": args.threads}
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    (args.out / f"rsa_round_{args.layers}l.json").write_text(json.dumps(results, indent=2))
    print(report(results, args))


if __name__ == "__main__":
    main()
