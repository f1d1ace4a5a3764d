"""The zaya-edge side of benchmarks/rsa_round.py, in its own process (its peak RSS is its own).

One Markovian RSA aggregation round through the runtime's real path: `MarkovianRSA.solve` resumes
from a checkpoint whose round 0 is a population of random τ-token tails, so it runs exactly one
aggregation round (prompts built by the runner, C tails each, one generate_batch per wave). Then
the batch-1 decode rate at each context, through a chat that keeps its cache between turns (each
turn extends the context to the next size). Prints one JSON object as its last line.

    .venv/bin/python benchmarks/rsa_round_edge.py ARTIFACT --tokenizer WORDS.json --prompts OUT.json
    .venv/bin/python benchmarks/rsa_round_edge.py ARTIFACT --tokenizer WORDS.json --profile-prefill 16384
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from zaya_edge.memory import peak_rss_bytes
from zaya_edge.runtime import Engine, Request, SamplingParams
from zaya_edge.runtime.rsa import Candidate, Checkpoint, MarkovianRSA, MemoryCheckpoint, RoundRecord
from zaya_edge.runtime.session import DecoderSession
from zaya_edge.runtime.tokenizer import Tokenizer

PROBLEM = "Find the sum of all positive divisors of 360 that are not divisible by 4."
FIRST_TOKEN = 16  # random tokens avoid the low ids (special tokens in ZAYA's vocabulary)


def load_engine(artifact: str, tokenizer: str, threads: int, max_batch: int) -> Engine:
    """The artifact with the benchmark's word tokenizer (one word = one token id, so τ words are τ
    tokens) and no end token: random weights must not stop a candidate before its budget."""
    engine = Engine(DecoderSession(artifact, threads=threads), Tokenizer(Path(tokenizer)), max_batch=max_batch)
    engine.eos_token_ids = []
    return engine


class RecordingEngine:
    """The engine as Markovian RSA sees it (a BatchGenerator), recording each wave it runs."""

    def __init__(self, engine: Engine):
        self.engine, self.waves = engine, []

    def __getattr__(self, name):  # codec, context_length, model_id, cache_bytes_per_sequence
        return getattr(self.engine, name)

    def generate_batch(self, requests, on_progress=None):
        start = time.perf_counter()
        out = self.engine.generate_batch(requests, on_progress)
        stats = self.engine.last_stats
        self.waves.append({"prompts": [list(r.prompt_ids) for r in requests], "counts": [len(c.tokens) for c in out],
                           "wall_s": time.perf_counter() - start, "ttft_s": stats.time_to_first_token_s,
                           "cache_bytes": stats.cache_bytes})
        return out


def population(settings: MarkovianRSA, engine: Engine, seed: int) -> MemoryCheckpoint:
    """A checkpoint holding round 0: N candidates, each a tail of τ random tokens."""
    rng = np.random.default_rng(seed)
    vocab, tau = engine.dims.vocab_size, settings.tail
    rollout = len(engine.codec.chat_prompt(PROBLEM))
    cands = []
    for j in range(settings.population):
        text = engine.codec.decode([int(t) for t in rng.integers(FIRST_TOKEN, vocab, tau)])
        cands.append(Candidate(index=j, seed=j, subset=None, prompt_tokens=rollout, generated_tokens=tau,
                               finish_reason="length", text=text, tail=text, tail_length=tau, carried="tail"))
    round0 = RoundRecord(round=0, kind="rollout", budget=settings.budget, wall_s=0.0, waves=1, candidates=cands)
    return MemoryCheckpoint(Checkpoint(PROBLEM, settings.identity(seed), engine.model_id, [round0]).to_dict())


def auto_max_memory(engine: Engine, settings: MarkovianRSA) -> int | None:
    """Cache bytes for the round: 80 % of the memory free now less two sequences (a prompt is
    prefilled aside and copied in); None (one batch) when the whole population fits."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    one = engine.cache_bytes_per_sequence(settings.subset * settings.tail + 1024 + settings.final_budget)
    room = int(0.8 * free) - 2 * one
    return None if room >= settings.population * one else max(room, one)


def run_round(engine: Engine, args) -> dict:
    """One aggregation round of the edge preset's shape, β shortened to `decode_tokens`."""
    shape = dict(population=args.population, subset=args.tails, rounds=1, budget=args.tau, tail=args.tau,
                 final_budget=args.decode_tokens, seed=args.seed)
    settings = MarkovianRSA.preset("edge", **shape)
    memory = auto_max_memory(engine, settings) if args.max_memory == "auto" else (
        None if args.max_memory == "none" else int(float(args.max_memory) * 2**30))
    settings = dataclasses.replace(settings, max_memory=memory)
    recorder = RecordingEngine(engine)
    start = time.perf_counter()
    result = settings.solve(recorder, PROBLEM, checkpoint=population(settings, engine, args.seed))
    wall = time.perf_counter() - start
    waves = recorder.waves
    prompts = [p for w in waves for p in w["prompts"]]
    counts = [c for w in waves for c in w["counts"]]
    ttft = sum(w["ttft_s"] for w in waves)
    decode_s = sum(w["wall_s"] - w["ttft_s"] for w in waves)
    if args.prompts:
        Path(args.prompts).write_text(json.dumps({"prompts": prompts, "counts": counts}))
    return {
        "wall_s": wall, "generate_s": result.rounds[-1].wall_s, "waves": len(waves), "max_memory": memory,
        "prompt_tokens": [len(p) for p in prompts], "generated_tokens": sum(counts),
        "prefill_tok_s": sum(map(len, prompts)) / ttft, "decode_tok_s": (sum(counts) - len(counts)) / decode_s,
        "cache_bytes": max(w["cache_bytes"] for w in waves), "peak_rss_bytes": peak_rss_bytes(),
    }


def sweep(engine: Engine, contexts: list[int], tokens: int, seed: int) -> list[dict]:
    """Batch-1 decode tok/s at each context: one chat whose every turn extends the cache to the next."""
    params = SamplingParams(temperature=1.0, max_new_tokens=tokens, seed=seed, ignore_eos=True)
    chat = engine.chat(params)
    rng = np.random.default_rng(seed)
    out, held = [], 0
    for context in contexts:
        words = max(1, context - held - 4)  # 4: the chat template's words around a turn
        message = engine.codec.decode([int(t) for t in rng.integers(FIRST_TOKEN, engine.dims.vocab_size, words)])
        reply = chat.send(message)
        reply.text()
        held = len(chat.history)
        out.append({"context": held - tokens + 1, "decode_tok_s": reply.stats.decode_tokens_per_s,
                    "prefill_tok_s": reply.stats.prefill_tokens_per_s})
    return out


def profile_prefill(args) -> dict:
    """onnxruntime's profile of one prompt's prefill: kernel time per op type, attention's share."""
    import onnxruntime as ort

    from zaya_edge.runtime import session as session_module

    class ProfilingOptions(ort.SessionOptions):
        def __init__(self):
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = str(Path(args.profile_dir) / "rsa_round_prefill")

    session_module.ort.SessionOptions = ProfilingOptions  # profile the runtime's own session
    engine = load_engine(args.artifact, args.tokenizer, args.threads, 1)
    prompt = np.random.default_rng(args.seed).integers(FIRST_TOKEN, engine.dims.vocab_size, args.profile_prefill)
    start = time.perf_counter()
    engine.generate_batch([Request(tuple(int(t) for t in prompt), SamplingParams(temperature=0.0, max_new_tokens=1))])
    wall = time.perf_counter() - start
    trace = Path(engine.session.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    by_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"].get("op_name")] += e["dur"] * 1e-6
    total = sum(by_op.values())
    attention = sum(s for op, s in by_op.items() if "attention" in str(op).lower())
    return {"tokens": int(args.profile_prefill), "wall_s": wall, "kernel_s": total,
            "attention_share": attention / total if total else 0.0, "ops": dict(by_op.most_common(10))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--tokenizer", required=True, help="the word tokenizer rsa_round.py writes")
    ap.add_argument("--prompts", help="write the round's prompt ids and token counts here (for transformers)")
    ap.add_argument("--population", "-N", type=int, default=8)
    ap.add_argument("--tails", "-C", type=int, default=4)
    ap.add_argument("--tau", type=int, default=4096)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--contexts", default="256,4096,16384")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-memory", default="auto", help="GiB of cache for the round, 'auto' or 'none'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile-prefill", type=int, default=0, help="only profile one prefill of this many tokens")
    ap.add_argument("--profile-dir", default="/tmp")
    args = ap.parse_args()
    if args.profile_prefill:
        print(json.dumps({"profile": profile_prefill(args)}))
        return
    engine = load_engine(args.artifact, args.tokenizer, args.threads, max(16, args.population))
    warm = SamplingParams(temperature=1.0, max_new_tokens=4, ignore_eos=True)
    engine.generate_batch([Request((FIRST_TOKEN,) * 16, warm)])  # first-call costs out of the figures
    result = {"engine": "zaya-edge", "load_s": engine.session.load_seconds, "round": run_round(engine, args)}
    print(json.dumps({"round": result["round"]}), flush=True)
    contexts = [int(c) for c in args.contexts.split(",") if c]
    result["contexts"] = sweep(engine, contexts, args.decode_tokens, args.seed)
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
