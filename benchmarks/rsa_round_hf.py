"""The transformers side of benchmarks/rsa_round.py: the same round through ZayaForCausalLM in bf16.

A plain reference loop, in its own process (its peak RSS is its own): the prompts zaya-edge's round
ran (ids read from the file rsa_round_edge.py wrote), one at a time, each prefilled in chunks with
the model's own cache, then sampled token by token (temperature 1, like the edge preset) for the
same number of tokens. Then the batch-1 decode rate at each context, one cache extended context by
context. Prints one JSON object as its last line.

    .venv/bin/python benchmarks/rsa_round_hf.py CHECKPOINT --prompts PROMPTS.json [--chunk 2048]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from transformers import ZayaForCausalLM

from zaya_edge.memory import peak_rss_bytes


def forward(model, ids: torch.Tensor, cache, chunk: int):
    """Feed `ids` [1, S] after `cache` in chunks; returns (last-position logits, cache)."""
    for c in range(0, ids.shape[1], chunk or ids.shape[1]):
        out = model(ids[:, c : c + (chunk or ids.shape[1])], cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
    return out.logits[:, -1], cache


def sample(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=gen)


def decode(model, logits, cache, tokens: int, gen) -> tuple[torch.Tensor, object]:
    """Sample `tokens` tokens, feeding each but the last; returns (the last logits, cache)."""
    for _ in range(tokens - 1):
        nxt = sample(logits, gen)
        out = model(nxt, cache=cache, use_cache=True)
        logits, cache = out.logits[:, -1], out.cache
    sample(logits, gen)
    return logits, cache


def run_round(model, prompts: list[list[int]], counts: list[int], chunk: int, seed: int) -> dict:
    """Every prompt in turn: prefill (to its first token), then the rest of its tokens."""
    gen = torch.Generator().manual_seed(seed)
    prefill_s = decode_s = 0.0
    start = time.perf_counter()
    with torch.no_grad():
        for prompt, count in zip(prompts, counts):
            t0 = time.perf_counter()
            logits, cache = forward(model, torch.tensor([prompt]), None, chunk)
            t1 = time.perf_counter()
            decode(model, logits, cache, count, gen)
            prefill_s, decode_s = prefill_s + t1 - t0, decode_s + time.perf_counter() - t1
            del cache
    return {"wall_s": time.perf_counter() - start, "prompt_tokens": [len(p) for p in prompts],
            "generated_tokens": sum(counts), "prefill_tok_s": sum(map(len, prompts)) / prefill_s,
            "decode_tok_s": (sum(counts) - len(counts)) / decode_s, "peak_rss_bytes": peak_rss_bytes()}


def sweep(model, contexts: list[int], tokens: int, chunk: int, seed: int) -> list[dict]:
    """Batch-1 decode tok/s at each context: one cache, extended with random tokens to each size."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    cache, held, out = None, 0, []
    with torch.no_grad():
        for context in contexts:
            ids = torch.as_tensor(rng.integers(16, vocab, (1, max(1, context - held))))
            t0 = time.perf_counter()
            logits, cache = forward(model, ids, cache, chunk)
            t1 = time.perf_counter()
            logits, cache = decode(model, logits, cache, tokens, gen)
            rate = (tokens - 1) / (time.perf_counter() - t1)
            out.append({"context": held + ids.shape[1], "decode_tok_s": rate, "prefill_tok_s": ids.shape[1] / (t1 - t0)})
            held += ids.shape[1] + tokens - 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--prompts", required=True, help="the prompt ids and token counts rsa_round_edge.py wrote")
    ap.add_argument("--contexts", default="256,4096,16384")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=2048, help="prefill chunk (0 = a whole prompt at once)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = ZayaForCausalLM.from_pretrained(args.checkpoint, dtype=torch.bfloat16).eval()
    load_s = time.perf_counter() - t0
    with torch.no_grad():  # first-call costs out of the figures
        decode(model, *forward(model, torch.full((1, 16), 16), None, 0), 4, torch.Generator())
    work = json.loads(open(args.prompts).read())
    result = {"engine": "transformers bf16", "load_s": load_s,
              "round": run_round(model, work["prompts"], work["counts"], args.chunk, args.seed)}
    print(json.dumps({"round": result["round"]}), flush=True)
    contexts = [int(c) for c in args.contexts.split(",") if c]
    result["contexts"] = sweep(model, contexts, args.decode_tokens, args.chunk, args.seed)
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
