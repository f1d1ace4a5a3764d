"""ZAYA's cached attention as a private-domain operator with a portable function body.

`ai.zaya::CachedAttention` is a model-local ONNX function: stock onnxruntime (and
onnxruntime-genai) inline its body, GroupQueryAttention over the same shared buffer as before;
the native kernel (custom_ops/src/attention_cpu.cc) registered for the same domain and name
replaces it. Why a kernel of our own: onnxruntime's CPU GroupQueryAttention reads each kv head
once per *query* head (4x for ZAYA1-8B's 8/2 heads) and takes fp16 caches only with fp16 math,
so at 16K context a decode step spends ~4x the time one read of the cache needs.

Inputs (B rows, S new tokens, T = total columns, C >= T-S cache columns):
    0 q [B,S,Hq*D]  1 k [B,S,Hkv*D]  2 v [B,S,Hkv*D]     fp32, after RoPE
    3 past_key [B,Hkv,C,D]  4 past_value                 the cache dtype (fp32 or fp16)
    5 attention_mask [B,T] int64                          1 = a real token; shared columns
Attributes: num_heads, kv_num_heads, scale, local_window_size (keys a query sees, itself included;
-1: no window).
Outputs: 0 out [B,S,Hq*D] fp32, 1 present_key, 2 present_value ([B,Hkv,max(C,T),D], the cache
dtype): the past with the new keys/values in columns [T-S, T) -- in place when the runtime binds
past and present to one buffer. Columns from T on are the buffer's own when past and present are
one buffer (as the runtime binds them) and undefined otherwise.

    mask ─► seqlens_k = T-1, total = T, key bias [B,1,S,T] (-65504 on padding keys)
    fp32 cache:  GroupQueryAttention(q, k, v, past) ─► out, present      (in place: shared buffer)
    fp16 cache:  k,v ─ round to fp16 ─┐   past ─ widen ─┐
                 GroupQueryAttention in fp32 ─► out, present[:T] ─ round to fp16 ─ ‖ past[T:] ─► present

The fp16 body computes as the kernel does (fp16 storage, fp32 arithmetic: onnxruntime's fp16
GroupQueryAttention would also round q and the scores), at the price of widening the whole cache
each call: the fallback is for runtimes without the native library, not for speed.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zaya_edge.artifact import ATTENTION_OP, ZAYA_DOMAIN

INPUT_NAMES = ("q", "k", "v", "past_key", "past_value", "attention_mask")
OUTPUT_NAMES = ("out", "present_key", "present_value")
MASKED = -65504.0  # fp16's lowest finite value: exp underflows to 0 in either cache dtype
_MS = "com.microsoft"
_ATTRS = (("num_heads", ir.AttributeType.INT, 1), ("kv_num_heads", ir.AttributeType.INT, 1),
          ("scale", ir.AttributeType.FLOAT, 0.0), ("local_window_size", ir.AttributeType.INT, -1))


def attention_function(kv_dtype: str = "float32") -> ir.Function:
    """Build the function body once per model, for its cache dtype (graph_io.KV_DTYPES)."""
    ins = {n: ir.Value(name=n) for n in INPUT_NAMES}
    tape = ir.tape.Tape()

    def c(v, dtype):
        return tape.op("Constant", [], {"value": ir.tensor(np.asarray(v, dtype=dtype))})

    mask = ins["attention_mask"]
    mask_shape = tape.op("Shape", [mask])
    batch = tape.op("Gather", [mask_shape, c([0], np.int64)], {"axis": 0})
    total = tape.op("Gather", [mask_shape, c(1, np.int64)], {"axis": 0})
    total_i32 = tape.op("Cast", [total], {"to": ir.DataType.INT32})
    seqlens = tape.op("Expand", [tape.op("Sub", [total_i32, c(1, np.int32)]), batch])
    seq = tape.op("Gather", [tape.op("Shape", [ins["q"]]), c([1], np.int64)], {"axis": 0})
    is_pad = tape.op("Equal", [mask, c(0, np.int64)])
    bias = tape.op("Where", [is_pad, c(MASKED, np.float32), c(0.0, np.float32)])
    bias = tape.op("Unsqueeze", [bias, c([1, 2], np.int64)])
    bias_shape = tape.op("Concat", [batch, c([1], np.int64), seq, tape.op("Unsqueeze", [total, c([0], np.int64)])],
                         {"axis": 0})
    bias = tape.op("Expand", [bias, bias_shape])
    q, k, v, past_key, past_value = (ins[n] for n in INPUT_NAMES[:5])
    if kv_dtype == "float16":
        k, v = (tape.op("CastLike", [tape.op("CastLike", [t, past_key]), q]) for t in (k, v))
        past_key, past_value = (tape.op("CastLike", [t, q]) for t in (past_key, past_value))
    refs = {name: ir.RefAttr(name, name, kind) for name, kind, _ in _ATTRS}
    out, present_key, present_value = tape.op_multi_out(
        "GroupQueryAttention", [q, k, v, past_key, past_value, seqlens, total_i32, None, None, None, bias],
        {**refs, "do_rotary": 0}, domain=_MS, num_outputs=3,
    )
    if kv_dtype == "float16":  # back to fp16: columns [0, T) computed, from T on the buffer's own (as in place)
        total_1d = tape.op("Unsqueeze", [total, c([0], np.int64)])

        def narrow(present, past):
            head = tape.op("Slice", [tape.op("CastLike", [present, past]), c([0], np.int64), total_1d, c([2], np.int64)])
            tail = tape.op("Slice", [past, total_1d, c([np.iinfo(np.int64).max], np.int64), c([2], np.int64)])
            return tape.op("Concat", [head, tail], {"axis": 2})

        present_key, present_value = narrow(present_key, ins["past_key"]), narrow(present_value, ins["past_value"])
    outs = [out, present_key, present_value]
    for value, name in zip(outs, OUTPUT_NAMES):
        value.name = name
    graph = ir.Graph(inputs=list(ins.values()), outputs=outs, nodes=tape.nodes,
                     opset_imports={"": 21, _MS: 1}, name=ATTENTION_OP)
    attrs = [ir.Attr(name, kind, default) for name, kind, default in _ATTRS]
    return ir.Function(ZAYA_DOMAIN, ATTENTION_OP, graph=graph, attributes=attrs)
