"""Load on `zaya-edge serve`: N concurrent streaming clients for a bounded time, on loopback only.

    python benchmarks/serve_load.py ARTIFACT [--clients 8,32] [--seconds 15] [--max-tokens 128]

Starts the server (127.0.0.1, a free port), then for each client count runs that many threads,
each sending streamed chat requests (tiny-arith problems, greedy, ignore_eos so every reply is
max-tokens long, as `zaya-edge bench` decodes) back to back until the time is up; requests in
flight then finish and the level ends. Prints per level: requests completed, errors (must be 0),
aggregate tok/s beside `zaya-edge bench`'s batch figure for the same batch, p50/p99 time to first
token, and the server's RSS before and after (the last level is run twice: RSS must not trend up).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zaya_edge.app import tiny_arith  # noqa: E402
from zaya_edge.app.serve.process import ServerProcess  # noqa: E402

REQUEST_TIMEOUT_S = 120


def one_request(conn: http.client.HTTPConnection, problem: str, max_tokens: int) -> tuple[float, int]:
    """(time to first token, completion tokens) of one streamed chat request; raises on any error."""
    body = {"messages": [{"role": "user", "content": problem}], "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    ttft, tokens, done = None, None, False
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            break
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(chunk["error"]["message"])
        delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
        if ttft is None and (delta.get("content") or delta.get("reasoning_content")):
            ttft = time.perf_counter() - start
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    resp.read()
    if not done or tokens is None or ttft is None:
        raise RuntimeError("the stream ended without [DONE], usage or a token")
    return ttft, tokens


def run_level(port: int, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` threads, each sending requests back to back until `seconds` have passed."""
    problems = [p.text for p in tiny_arith.held_out_set()]
    deadline = time.monotonic() + seconds
    ttfts, tokens, errors, lock = [], [0], [], threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        i = k
        while time.monotonic() < deadline:
            try:
                ttft, n = one_request(conn, problems[i % len(problems)], max_tokens)
                with lock:
                    ttfts.append(ttft)
                    tokens[0] += n
            except Exception as exc:  # counted, and the connection is opened afresh
                with lock:
                    errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
            i += clients
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + REQUEST_TIMEOUT_S)
    wall = time.perf_counter() - start
    q = statistics.quantiles(ttfts, n=100) if len(ttfts) >= 2 else [ttfts[0] if ttfts else 0.0] * 99
    return {"clients": clients, "requests": len(ttfts), "errors": len(errors), "first_errors": errors[:3],
            "tokens": tokens[0], "tok_s": tokens[0] / wall, "ttft_p50": q[49], "ttft_p99": q[98], "wall_s": wall}


def bench_figures(artifact: str, batches: list[int], max_tokens: int, threads: int | None) -> dict[int, float]:
    """`zaya-edge bench`'s aggregate decode tok/s at these batch sizes (same new tokens, a chat-sized prompt)."""
    from zaya_edge.app.bench import bench_artifact

    report = bench_artifact(artifact, threads=threads, prompt=32, new_tokens=max_tokens, prefill=32,
                            batches=tuple(batches), runs=1)
    return {b: report["median"][f"decode_tok_s_b{b}"] for b in batches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--clients", default="8,32", help="Concurrent clients per level (comma-separated).")
    ap.add_argument("--seconds", type=float, default=15.0, help="How long each level sends new requests.")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads of the server and of bench.")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    bench = bench_figures(args.artifact, levels, args.max_tokens, args.threads)
    flags = ["--max-batch", str(max(levels)), "--max-queue", str(2 * max(levels))]
    flags += ["--threads", str(args.threads)] if args.threads else []
    with ServerProcess(args.artifact, *flags) as server:
        rss = [server.rss_bytes()]
        print(f"server on {server.url}: max batch {max(levels)}; RSS at start {rss[0] / 2**20:.1f} MiB")
        print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'tok/s':>8} {'bench tok/s':>11} {'TTFT p50':>9} "
              f"{'p99':>8} {'RSS MiB':>8}")
        for clients in levels + levels[-1:]:
            r = run_level(server.port, clients, args.seconds, args.max_tokens)
            rss.append(server.rss_bytes())
            print(f"{clients:>7} {r['requests']:>8} {r['errors']:>6} {r['tok_s']:>8.1f} {bench[clients]:>11.1f} "
                  f"{r['ttft_p50'] * 1000:>7.1f}ms {r['ttft_p99'] * 1000:>6.1f}ms {rss[-1] / 2**20:>8.1f}")
            for e in r["first_errors"]:
                print(f"        error: {e}")
        print(f"RSS before {rss[0] / 2**20:.1f} MiB, after {rss[-1] / 2**20:.1f} MiB "
              f"(last two levels: {rss[-2] / 2**20:.1f} -> {rss[-1] / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
