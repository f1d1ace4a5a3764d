"""GET /metrics in Prometheus' text format: the scheduler's gauges and counters, HTTP counts, memory."""

from __future__ import annotations

import collections
import os
import threading

from zaya_edge.memory import peak_rss_bytes
from zaya_edge.runtime.scheduler import SchedulerMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric, type, help, SchedulerMetrics field)
_SCHEDULER = [
    ("zaya_edge_queue_length", "gauge", "Sequences waiting for a batch slot.", "queue_length"),
    ("zaya_edge_live_sequences", "gauge", "Sequences in the running batch.", "live_sequences"),
    ("zaya_edge_batch_slots", "gauge", "Rows of the batch (--max-batch).", "slots"),
    ("zaya_edge_tokens_per_second", "gauge", "Generated tokens per second over the last 10 s.", "tokens_per_s"),
    ("zaya_edge_cache_bytes", "gauge", "Bytes of the batch's KV and CCA state cache.", "cache_bytes"),
    ("zaya_edge_generated_tokens_total", "counter", "Tokens generated.", "generated_tokens"),
    ("zaya_edge_prompt_tokens_total", "counter", "Prompt tokens of admitted sequences.", "prompt_tokens"),
    ("zaya_edge_prefill_tokens_total", "counter", "Prompt tokens actually computed (shared prompts once, cached ones not).",
     "prefill_tokens"),
    ("zaya_edge_model_calls_total", "counter", "onnxruntime session calls (prefills and decode steps).", "model_calls"),
    ("zaya_edge_prefix_hits_total", "counter", "Prompts (and shared prompt heads) started from the prefix cache.",
     "prefix_hits"),
    ("zaya_edge_prefix_reused_tokens_total", "counter", "Prompt tokens restored from the prefix cache, not computed.",
     "prefix_tokens_reused"),
    ("zaya_edge_prefix_cache_bytes", "gauge", "Bytes the prefix cache holds (--prefix-cache bounds it).",
     "prefix_cache_bytes"),
    ("zaya_edge_cancelled_sequences_total", "counter", "Sequences cancelled (client gone, shutdown).", "cancelled"),
]


class HTTPCounts:
    """Responses by path and status, counted by the ASGI middleware (any thread-safe increment)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()

    def add(self, path: str, status: int) -> None:
        with self._lock:
            self.counts[(path, status)] += 1

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self.counts.items())
        return [f'zaya_edge_http_responses_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in items]


def resident_bytes() -> int:
    """The process's current RSS (Linux /proc), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return peak_rss_bytes()


def render(m: SchedulerMetrics, http: HTTPCounts) -> str:
    out = []
    for name, kind, text, field in _SCHEDULER:
        value = getattr(m, field)
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {round(value, 3) if isinstance(value, float) else value}"]
    out += ["# HELP zaya_edge_http_responses_total HTTP responses by path and status.",
            "# TYPE zaya_edge_http_responses_total counter", *http.lines()]
    out += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {resident_bytes()}"]
    return "\n".join(out) + "\n"
