"""`zaya-edge bench`: the runtime's speed and memory on one artifact, as medians.

Workloads (token counts configurable): batch-1 decode after a short prompt, a long-prompt
prefill, and aggregate decode at larger batches. Runs are repeated and interleaved (one of
each workload per round) so slow spells of a shared machine hit all workloads alike.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from zaya_edge.runtime import Engine, Request, SamplingParams
from zaya_edge.memory import peak_rss_bytes


# The default workload: a short-prompt decode, a long-prompt prefill, aggregate decode at larger batches.
WORKLOAD = dict(prompt=128, new_tokens=128, prefill=512, batches=(8, 16), runs=3)


def _prompts(vocab: int, n: int, length: int, seed: int) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(t) for t in rng.integers(16, vocab, length)) for _ in range(n)]


def _greedy(new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)


def _measure(engine, prompt, new_tokens, prefill, batches, runs, seed, on_result) -> dict[str, list[float]]:
    """One warm-up, then `runs` rounds of every workload, interleaved; samples per figure."""
    vocab = engine.dims.vocab_size
    engine.generate_batch([Request(_prompts(vocab, 1, 8, seed)[0], _greedy(4))])
    samples: dict[str, list[float]] = {}

    def record(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)
        if on_result:
            on_result(key, value)

    for run in range(runs):
        engine.generate_batch([Request(_prompts(vocab, 1, prompt, seed + run)[0], _greedy(new_tokens))])
        record("decode_tok_s_b1", engine.last_stats.decode_tokens_per_s)
        record("ttft_s", engine.last_stats.time_to_first_token_s)
        engine.generate_batch([Request(_prompts(vocab, 1, prefill, seed + 100 + run)[0], _greedy(1))])
        record("prefill_tok_s", engine.last_stats.prefill_tokens_per_s)
        for b in batches:
            engine.generate_batch([Request(p, _greedy(new_tokens)) for p in _prompts(vocab, b, prompt, seed + 1000 * b + run)])
            record(f"decode_tok_s_b{b}", engine.last_stats.decode_tokens_per_s)
    return samples


def bench_artifact(
    path: str | Path,
    *,
    threads: int | None = None,
    prompt: int = WORKLOAD["prompt"],
    new_tokens: int = WORKLOAD["new_tokens"],
    prefill: int = WORKLOAD["prefill"],
    batches: tuple[int, ...] = WORKLOAD["batches"],
    runs: int = WORKLOAD["runs"],
    seed: int = 0,
    on_result=None,
) -> dict:
    t0 = time.perf_counter()
    # the workloads' prompts are random and never repeat: a prefix cache would only copy them and hold memory
    engine = Engine.load(path, threads=threads, max_batch=max((1, *batches)), prefix_cache=0)
    load_s = time.perf_counter() - t0
    samples = _measure(engine, prompt, new_tokens, prefill, batches, runs, seed, on_result)
    manifest = engine.manifest
    artifact_bytes = engine.session.artifact.total_bytes
    # the largest cache any workload held: rows x one sequence of (prompt + new) columns
    cache_bytes = max(
        rows * engine.cache_bytes_per_sequence(length)
        for rows, length in [(1, prefill + 1), *((b, prompt + new_tokens) for b in (1, *batches))]
    )
    return {
        "artifact": str(path),
        "precision": manifest.precision,
        "threads": threads,
        "workload": {"prompt": prompt, "new_tokens": new_tokens, "prefill": prefill, "batches": list(batches), "runs": runs},
        "load_s": load_s,
        "median": {k: statistics.median(v) for k, v in samples.items()},
        "samples": samples,
        "peak_rss_bytes": peak_rss_bytes(),
        "artifact_bytes": artifact_bytes,
        "weights_bytes": engine.session.artifact.weight_bytes,
        "kv_bytes_per_token": manifest.kv_bytes_per_token,
        "cache_bytes": cache_bytes,
        # the memory goal: peak RSS within 15 % of what the run must hold
        "rss_budget_bytes": int((artifact_bytes + cache_bytes) * 1.15),
        "router_kernel": "native" if engine.session.uses_native_kernels else "function fallback",
    }


def format_report(r: dict) -> str:
    m = r["median"]
    lines = [f"{r['artifact']} ({r['precision']}, router: {r['router_kernel']}, {r['workload']['runs']} runs, medians)"]
    lines.append(f"  decode batch 1      {m['decode_tok_s_b1']:8.1f} tok/s   (prompt {r['workload']['prompt']}, {r['workload']['new_tokens']} new)")
    for b in r["workload"]["batches"]:
        lines.append(f"  decode batch {b:<6} {m[f'decode_tok_s_b{b}']:8.1f} tok/s   (aggregate)")
    lines.append(f"  prefill             {m['prefill_tok_s']:8.1f} tok/s   (prompt {r['workload']['prefill']})")
    lines.append(f"  time to first token {m['ttft_s'] * 1000:8.1f} ms")
    lines.append(f"  peak RSS            {r['peak_rss_bytes'] / 2**30:8.2f} GiB  (artifact {r['artifact_bytes'] / 2**30:.2f} GiB"
                 f" + cache {r['cache_bytes'] / 2**30:.2f} GiB, +15 % = {r['rss_budget_bytes'] / 2**30:.2f} GiB)")
    return "\n".join(lines)
