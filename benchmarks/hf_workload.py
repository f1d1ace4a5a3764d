"""The `zaya-edge bench` workloads on transformers' ZayaForCausalLM in bf16 (the baseline).

Runs in its own process (its peak RSS is its own) and prints one JSON object. Same token
counts and the same interleaving as zaya_edge/bench.py: per run, batch-1 decode after a
prompt, a long-prompt prefill, then aggregate decode at each batch size.

    .venv/bin/python benchmarks/hf_workload.py CHECKPOINT [--runs 3] [--new-tokens 128] ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from transformers import ZayaForCausalLM

from zaya_edge.memory import peak_rss_bytes


def _prompts(vocab, n, length, seed):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.integers(16, vocab, (n, length)))


def decode_rate(model, ids, new_tokens):
    """Prefill with logits_to_keep=1, then greedy steps with the HF cache: (decode tok/s, ttft s)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(ids, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t1 = time.perf_counter()
        cache = out.past_key_values
        for _ in range(new_tokens - 1):
            out = model(nxt, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    return ids.shape[0] * (new_tokens - 1) / (t2 - t1), t1 - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--batches", default="8,16")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = ZayaForCausalLM.from_pretrained(args.checkpoint, dtype=torch.bfloat16).eval()
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    batches = [int(b) for b in args.batches.split(",") if b]
    decode_rate(model, _prompts(vocab, 1, 16, 0), 4)  # warm-up
    samples: dict[str, list[float]] = {}
    for run in range(args.runs):
        rate, ttft = decode_rate(model, _prompts(vocab, 1, args.prompt, run), args.new_tokens)
        samples.setdefault("decode_tok_s_b1", []).append(rate)
        samples.setdefault("ttft_s", []).append(ttft)
        ids = _prompts(vocab, 1, args.prefill, 100 + run)
        t = time.perf_counter()
        with torch.no_grad():
            model(ids, use_cache=True, logits_to_keep=1)
        samples.setdefault("prefill_tok_s", []).append(args.prefill / (time.perf_counter() - t))
        for b in batches:
            rate, _ = decode_rate(model, _prompts(vocab, b, args.prompt, 1000 * b + run), args.new_tokens)
            samples.setdefault(f"decode_tok_s_b{b}", []).append(rate)
        print(json.dumps({"run": run, **{k: v[-1] for k, v in samples.items()}}), flush=True)
    print(json.dumps({
        "engine": "transformers bf16",
        "load_s": load_s,
        "median": {k: statistics.median(v) for k, v in samples.items()},
        "samples": samples,
        "peak_rss_bytes": peak_rss_bytes(),
    }))


if __name__ == "__main__":
    main()
