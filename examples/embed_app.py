"""Embedding zaya-edge in an app: load an artifact once, serve several prompts.

Uses only the public API (no CLI): streaming text, cancelling a reply from another thread,
a batch of requests in one go, and per-request statistics.

    python examples/embed_app.py ARTIFACT
"""

from __future__ import annotations

import sys
import threading

from zaya_edge.runtime import Engine, Request, SamplingParams


def main(artifact: str) -> None:
    engine = Engine.load(artifact)  # once: validates the manifest, builds the session
    params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=48, seed=0)

    # 1. stream a reply
    reply = engine.generate("What is 12 + 30?", params)
    for text in reply:
        print(text, end="", flush=True)
    s = reply.stats
    print(f"\n  [{s.generated_tokens} tokens, first token {s.time_to_first_token_s * 1e3:.0f} ms, {s.decode_tokens_per_s:.0f} tok/s]")

    # 2. cancel a long reply from another thread (a UI's stop button)
    long = engine.generate("Write a long story.", SamplingParams(max_new_tokens=400, seed=1))
    timer = threading.Timer(0.05, long.cancel)
    timer.start()
    text = long.text()
    timer.cancel()
    print(f"cancelled after {len(long.tokens)} tokens ({long.completion.finish_reason}): {text[:40]!r}...")

    # 3. several prompts as one batch: one model call per step for all of them
    questions = ["Name a prime.", "Add 7 and 5.", "Spell 'edge'."]
    requests = [Request(engine.encode_prompt(q), params) for q in questions]
    for q, done in zip(questions, engine.generate_batch(requests)):
        print(f"{q!r} -> {done.text[:40]!r} ({len(done.tokens)} tokens, {done.finish_reason})")
    print(f"  batch: {engine.last_stats.session_calls} session calls, peak RSS {engine.last_stats.peak_rss_bytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
