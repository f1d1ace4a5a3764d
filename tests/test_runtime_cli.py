"""`zaya-edge run`, `chat` and `inspect` as a person uses them."""

from __future__ import annotations

import json
import subprocess
import sys

from zaya_edge.runtime import Engine


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "zaya_edge", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_run_streams_text_and_stats(tiny_artifact):
    proc = cli("run", tiny_artifact[1], "hello there", "--max-new-tokens", "12", "--seed", "3", "--stats")
    assert proc.returncode == 0, proc.stderr
    again = cli("run", tiny_artifact[1], "hello there", "--max-new-tokens", "12", "--seed", "3")
    assert proc.stdout == again.stdout and proc.stdout.strip()
    assert "tok/s" in proc.stderr and "peak RSS" in proc.stderr


def test_chat_turns_reset_and_stats(tiny_artifact):
    script = "first\n/stats\nsecond\n/reset\nthird\n/quit\n"
    proc = cli("chat", tiny_artifact[1], "--max-new-tokens", "6", "--seed", "1", stdin=script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(">>> ") >= 5
    assert "conversation cleared" in proc.stderr and "tok/s" in proc.stderr


def test_inspect_reports_memory_and_ops(tiny_artifact):
    proc = cli("inspect", tiny_artifact[1], "--context", "1000", "--batch", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    mem = report["memory_estimate"]
    model = tiny_artifact[0].config
    kv = model.num_hidden_layers * 2 * model.num_key_value_heads * model.head_dim * 4 * 1000 * 2
    assert mem["kv_cache_bytes"] == kv
    assert report["ops"]["ai.zaya"]["Router"] == model.num_hidden_layers
    text = cli("inspect", tiny_artifact[1], "--load")
    assert text.returncode == 0 and "router kernel" in text.stdout
    assert "custom ops: " in text.stdout  # which library would be used, before any session is made


def test_bench_smoke(tiny_artifact, tmp_path):
    out = tmp_path / "bench.json"
    proc = cli("bench", tiny_artifact[1], "--prompt", "8", "--new-tokens", "4", "--prefill", "16",
               "--batches", "2", "--runs", "1", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "decode batch 1" in proc.stdout and "prefill" in proc.stdout
    result = json.loads(out.read_text())
    assert set(result["median"]) == {"decode_tok_s_b1", "ttft_s", "prefill_tok_s", "decode_tok_s_b2"}
    assert all(v > 0 for v in result["median"].values())
    # the largest cache of these workloads: 2 rows x (8 + 4) columns, or 1 row x 17 for the prefill
    one = Engine.load(tiny_artifact[1]).cache_bytes_per_sequence
    want = max(2 * one(12), one(17))
    assert result["cache_bytes"] == want
    assert result["rss_budget_bytes"] == int((result["artifact_bytes"] + want) * 1.15)
