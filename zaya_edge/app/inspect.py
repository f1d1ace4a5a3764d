"""`zaya-edge inspect`: what an artifact is and what running it will cost, from its manifest."""

from __future__ import annotations

from pathlib import Path

from zaya_edge import artifact as A
from zaya_edge import custom_ops


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


DEFAULT_CONTEXT = 4096  # tokens the memory estimate assumes unless told


def inspect_artifact(folder: str | Path, context: int | None = None, batch: int = 1, load_session: bool = False) -> dict:
    """The report `inspect` prints; the memory estimate at `context` tokens (default: DEFAULT_CONTEXT,
    or the artifact's context length where that is shorter)."""
    folder = Path(folder)
    artifact = A.Artifact.open(folder)
    m, d = artifact.manifest, artifact.dims
    context = min(DEFAULT_CONTEXT, m.context_length) if context is None else context
    weights = artifact.weight_bytes
    kv = m.kv_bytes_per_token * context * batch
    fixed = d.fixed_state_bytes * batch
    report = {
        "folder": str(folder),
        "format_version": m.format_version,
        "precision": m.precision,
        "kv_cache": m.kv_dtype,
        "quantization": m.quantization,
        "all_logits": m.all_logits,
        "context_length": m.context_length,
        "model": {
            "layers": d.num_layers, "hidden": d.hidden_size, "heads": d.num_heads, "kv_heads": d.num_kv_heads,
            "head_dim": d.head_dim, "experts": d.num_experts, "vocab": d.vocab_size,
            "layer_types": sorted(set(d.layer_types)),
        },
        "files": {name: rec.bytes for name, rec in sorted(m.files.items())},
        "ops": m.ops,
        "inputs": [list(s) for s in m.inputs[:2]] + [["...", "", f"{len(m.inputs) - 2} state inputs"]],
        "outputs": [list(s) for s in m.outputs[:1]] + [["...", "", f"{len(m.outputs) - 1} state outputs"]],
        "memory_estimate": {
            "context": context, "batch": batch, "weights_bytes": weights,
            "kv_cache_bytes": kv, "fixed_state_bytes": fixed, "total_bytes": weights + kv + fixed,
        },
        "versions": m.versions,
        "source": {"kind": m.source.kind, "path": m.source.path},
    }
    report["custom_ops"] = custom_ops.describe()
    report["experts"] = artifact.experts if m.quantization else None
    if load_session:
        from zaya_edge.runtime.session import DecoderSession

        session = DecoderSession(artifact)
        report["router_kernel"] = (
            f"native ({session.custom_ops_library})" if session.uses_native_kernels else "function fallback (standard ONNX ops)"
        )
        if report["experts"] == A.EXPERTS_FUSED:
            report["experts_kernel"] = str(custom_ops.op_path(session.session, A.EXPERT_MOE_OP))
    report["text"] = _text(report)
    return report


def precision_text(precision: str, q: dict) -> str:
    """`int4, block 32, symmetric, mse; lm_head int4` from the manifest's quantization record."""
    parts = [precision]
    if q.get("block_size"):
        parts.append(f"block {q['block_size']}")
    if "symmetric" in q:
        parts.append("symmetric" if q["symmetric"] else "asymmetric")
    if q.get("method"):
        parts.append(str(q["method"]))
    head = f"; lm_head int{q['lm_head_bits']}" if q.get("lm_head_bits") else ""
    return ", ".join(parts) + head


def _text(r: dict) -> str:
    mem = r["memory_estimate"]
    model = r["model"]
    lines = [
        f"artifact      {r['folder']}  (format v{r['format_version']})",
        f"precision     {precision_text(r['precision'], r['quantization'])}",
        f"model         {model['layers']} layers, hidden {model['hidden']}, {model['heads']}/{model['kv_heads']} heads x {model['head_dim']}, "
        f"{model['experts']} experts + skip, vocab {model['vocab']}, {', '.join(model['layer_types'])}",
        f"context       {r['context_length']} tokens; logits: {'all positions' if r['all_logits'] else 'last position'}",
        "files         " + ", ".join(f"{n} {_size(b)}" for n, b in r["files"].items()),
        "ops           " + "; ".join(f"{dom}: " + ", ".join(f"{op} x{n}" for op, n in ops.items()) for dom, ops in r["ops"].items()),
        f"inputs        input_ids [batch, sequence], attention_mask [batch, total_sequence], {r['inputs'][-1][2]}",
        f"memory        at context {mem['context']} x batch {mem['batch']}: weights {_size(mem['weights_bytes'])} + "
        f"KV ({r['kv_cache']}) {_size(mem['kv_cache_bytes'])} + CCA state {_size(mem['fixed_state_bytes'])} = {_size(mem['total_bytes'])}",
        "versions      " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
    ]
    if r["experts"]:
        lines.append("experts       " + ("ai.zaya::ExpertMoE (native kernel on the stored blocks, or its function body)"
                                         if r["experts"] == A.EXPERTS_FUSED else "portable (com.microsoft QMoE / MatMulNBits)"))
    lines.append(r["custom_ops"])
    if "router_kernel" in r:
        lines.append(f"router kernel {r['router_kernel']}")
    if "experts_kernel" in r:
        lines.append(f"experts kernel {r['experts_kernel']}")
    return "\n".join(lines)
