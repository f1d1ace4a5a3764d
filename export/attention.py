"""GroupQueryAttention's contract in plain ONNX ops, for the head sizes its kernel refuses.

onnxruntime's GroupQueryAttention needs head_size % 8 == 0 ("head_size must be a multiple of 8");
transformers' ZAYA takes any head_dim. Same inputs, same outputs, same cache semantics: the new
keys/values land in columns [total−S, total) of the past buffer, which may be the runtime's
preallocated shared buffer (present keeps its shape) or exactly the past (present = past ‖ new).

    past[:, :, :total−S] ‖ k_new ‖ past[:, :, total:] ─► present_key   (values alike)
    q [B,Hkv,g,S,D] · present[:, :, :total]ᵀ · D^-½ + key-padding bias
        ─ Where(causal (and window) by column, ·, float32 min) ─ Softmax ─ · values ─► [B,S,Hq·D]

Masked scores are the float32 minimum, never -inf: a padding query whose keys are all masked gets
finite (uniform) weights, as GroupQueryAttention gives it (the native CachedAttention kernel gives
such a query zeros), so nothing turns NaN downstream; padding rows are never read.
It copies the cache once per call, where the kernel writes one column in place. An fp16 cache
is widened to fp32 for the attention (the new keys/values are rounded to fp16 first, as stored).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zaya_edge.config import ZayaDims

from .emitter import F32_MIN, INT64_MAX, Emitter



def _write_new(e: Emitter, path: str, past, new, ctx):
    """The past buffer with `new` [B,Hkv,S,D] in columns [total−S, total); then its first `total` columns."""
    i64 = e.i64
    before = e.op("Slice", f"{path}/before", [past, i64([0]), ctx["start_1d"], i64([2])])
    after = e.op("Slice", f"{path}/after", [past, ctx["total_1d"], i64([INT64_MAX]), i64([2])])
    present = e.op("Concat", f"{path}/present", [before, new, after], {"axis": 2})
    used = e.op("Slice", f"{path}/used", [present, i64([0]), ctx["total_1d"], i64([2])])
    return present, used


def _allowed(e: Emitter, path: str, ctx, window: int):
    """[S, T] bool: key column j is visible to new token i iff j ≤ total−S+i (and j > total−S+i−window)."""
    i64 = e.i64
    cols = e.op("Range", f"{path}/key_columns", [i64(0), ctx["total_i64"], i64(1)])
    rows = e.op("Range", f"{path}/query_columns", [ctx["start_i64"], ctx["total_i64"], i64(1)])
    rows = e.op("Unsqueeze", f"{path}/query_columns_2d", [rows, i64([1])])
    allowed = e.op("LessOrEqual", f"{path}/causal", [cols, rows])
    if window > 0:
        inside = e.op("Greater", f"{path}/in_window", [cols, e.op("Sub", f"{path}/window_start", [rows, i64(window)])])
        allowed = e.op("And", f"{path}/causal_window", [allowed, inside])
    return allowed


def plain_attention(e: Emitter, path: str, qkv, past: dict, ctx: dict, d: ZayaDims, window: int):
    """(attention [B,S,Hq·D], present key, present value) for q/k/v [B,S,heads·D] after RoPE."""
    q, k, v = qkv
    D, Hq, Hkv = d.head_dim, d.num_heads, d.num_kv_heads
    p, i64 = f"{path}/attention", e.i64
    heads_first = {"perm": [0, 2, 1, 3]}
    k4 = e.op("Transpose", f"{p}/k_heads", [e.op("Reshape", f"{p}/k_split", [k, i64([0, 0, Hkv, D])])], heads_first)
    v4 = e.op("Transpose", f"{p}/v_heads", [e.op("Reshape", f"{p}/v_split", [v, i64([0, 0, Hkv, D])])], heads_first)
    if ctx["kv_dtype"] == "float16":  # stored in fp16, attended in fp32
        k4, v4 = (e.op("Cast", f"{p}/{n}_f16", [t], {"to": ir.DataType.FLOAT16}) for n, t in (("k", k4), ("v", v4)))
    present_k, keys = _write_new(e, f"{p}/key_cache", past["key"], k4, ctx)
    present_v, values = _write_new(e, f"{p}/value_cache", past["value"], v4, ctx)
    if ctx["kv_dtype"] == "float16":
        keys, values = (e.op("Cast", f"{p}/{n}_f32", [t], {"to": ir.DataType.FLOAT}) for n, t in (("keys", keys), ("values", values)))
    q5 = e.op("Reshape", f"{p}/q_split", [q, i64([0, 0, Hkv, Hq // Hkv, D])])
    q5 = e.op("Transpose", f"{p}/q_groups", [q5], {"perm": [0, 2, 3, 1, 4]})  # [B, Hkv, g, S, D]
    keys_t = e.op("Unsqueeze", f"{p}/keys_t", [e.op("Transpose", f"{p}/keys_d_first", [keys], {"perm": [0, 1, 3, 2]}),
                                               i64([2])])
    scores = e.op("Mul", f"{p}/scaled", [e.op("MatMul", f"{p}/scores", [q5, keys_t]), e.const(np.float32(D ** -0.5))])
    scores = e.op("Add", f"{p}/padding", [scores, e.op("Unsqueeze", f"{p}/bias_5d", [ctx["attn_bias"], i64([1])])])
    scores = e.op("Where", f"{p}/masked", [_allowed(e, p, ctx, window), scores, e.const(np.float32(F32_MIN))])
    probs = e.op("Softmax", f"{p}/probs", [scores], {"axis": -1})
    out = e.op("MatMul", f"{p}/mix", [probs, e.op("Unsqueeze", f"{p}/values_5d", [values, i64([2])])])
    out = e.op("Transpose", f"{p}/tokens_first", [out], {"perm": [0, 3, 1, 2, 4]})
    return e.op("Reshape", f"{p}/merge", [out, i64([0, 0, Hq * D])]), present_k, present_v
