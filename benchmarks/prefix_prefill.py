"""One Markovian RSA aggregation round's prefill, with and without the prefix cache (A/B, interleaved).

The round is built as the runner builds it: N prompts, each the chat template around the shipped
aggregation template, the problem and C tails drawn (without replacement, in draw order) from N
candidates' τ-token tails. Each sample prefills all N prompts together (one generated token, so
the figure is the prefill) on an engine with the cache off (A) and on, cleared first (B); then
B2: the next round's prompts (other tails) on the warm cache, which already holds the head.

    .venv/bin/python benchmarks/prefix_prefill.py [--population 8 --subset 4 --tail 512 --runs 3]

A random export (hidden 512, 4 layers, context 8192) is made once under .cache/prefix-bench.
Timings on a shared machine are noisy: compare the A/B ratio of one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".cache" / "prefix-bench"
WIDE = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
            moe_intermediate_size=512, router_hidden_size=64, max_position_embeddings=8192)
WORDS = ["add", "the", "tens", "carry", "check", "so", "result", "answer", "is", "plus", "then", "we", "get"]
PROBLEM = ("Let n be the smallest positive integer such that n is divisible by 20, n^2 is a perfect cube "
           "and n^3 is a perfect square. How many digits does n have?")


def make_artifact() -> Path:
    art = FOLDER / "art"
    if (art / "zaya_edge.json").exists():
        return art
    from zaya_edge.export import export_model
    from zaya_edge.export.fixtures.random_model import tiny_model
    from zaya_edge.export.fixtures.tiny_tokenizer import save_tokenizer

    tiny_model(seed=3, **WIDE).save_pretrained(FOLDER / "src")
    save_tokenizer(FOLDER / "src")
    export_model(FOLDER / "src", art, precision="fp32", progress=False, context_length=8192)
    return art


def round_prompts(engine, population: int, subset: int, tail: int, seed: int) -> list[tuple[int, ...]]:
    """An aggregation round's prompts over `population` random candidate tails of about `tail` tokens."""
    from zaya_edge.runtime.rsa.prompts import default_template, render_prompt

    codec, rng = engine.codec, np.random.default_rng(seed)
    tails = []
    for _ in range(population):  # the last τ tokens of a made-up reasoning text, decoded (as the runner carries them)
        text = " ".join(f"{rng.choice(WORDS)} {int(rng.integers(100))}" for _ in range(tail))
        tails.append(codec.decode(codec.encode(text)[-tail:]))
    prompts = []
    for j in range(population):  # as runner._draw: C distinct indices, in the order drawn
        draw = np.random.default_rng(np.random.SeedSequence([seed, 1, 1, j])).choice(population, subset, replace=False)
        text = render_prompt(default_template(subset), PROBLEM, [tails[i] for i in draw])
        prompts.append(tuple(codec.chat_prompt(text)))
    return prompts


def prefill(engine, prompts) -> tuple[float, int, int]:
    """(wall s, prompt tokens computed, reused from the cache) of prefilling `prompts` together."""
    from zaya_edge.runtime import Request, SamplingParams

    params = SamplingParams(temperature=0.0, max_new_tokens=1)
    t0 = time.perf_counter()
    engine.generate_batch([Request(p, params) for p in prompts])
    s = engine.last_stats
    return time.perf_counter() - t0, s.prefill_tokens, s.prefix_tokens_reused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--subset", type=int, default=4)
    ap.add_argument("--tail", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from zaya_edge.runtime import Engine

    art = make_artifact()
    off = Engine.load(art, threads=args.threads, max_batch=args.population, prefix_cache=0)
    on = Engine.load(art, threads=args.threads, max_batch=args.population, prefix_cache=1 << 30)
    first, second = (round_prompts(off, args.population, args.subset, args.tail, seed) for seed in (1, 2))
    total = sum(map(len, first))
    print(f"{args.population} prompts of {min(map(len, first))}..{max(map(len, first))} tokens ({total} in all), "
          f"C={args.subset}, tail ~{args.tail} tokens")
    prefill(off, first[:1])  # warm-up
    samples: dict[str, list[tuple[float, int, int]]] = {"A off": [], "B on, cold": [], "B2 on, next round": []}
    for _ in range(args.runs):  # interleaved: A, B, B2 in every run
        samples["A off"].append(prefill(off, first))
        on.prefix_cache.clear()
        samples["B on, cold"].append(prefill(on, first))
        samples["B2 on, next round"].append(prefill(on, second))
    base = statistics.median(s[0] for s in samples["A off"])
    for name, runs in samples.items():
        wall = statistics.median(s[0] for s in runs)
        computed, reused = runs[-1][1], runs[-1][2]
        print(f"  {name:<18} computed {computed:6d} tok  reused {reused:6d} tok  wall {wall:6.2f} s  "
              f"(x{wall / base:.2f} of A, samples {', '.join(f'{s[0]:.2f}' for s in runs)})")


if __name__ == "__main__":
    main()
