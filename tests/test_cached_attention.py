"""ai.zaya::CachedAttention, op alone: the native kernel = its function body (GroupQueryAttention)
= a numpy reference, for fp32 and fp16 caches.

Shapes: ZAYA1-8B's heads (8 query / 2 kv x 128) and small ones (head size 8 and 16, MHA and
3-way groups); decode and prefill calls (1..130 new tokens) over empty, short and long pasts;
preallocated buffers (capacity > columns) and exact ones; left padding and holes in the mask;
sliding windows. The kernel's lower ISA paths run the same cases in fresh processes.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
ir = pytest.importorskip("onnx_ir")

from zaya_edge import custom_ops  # noqa: E402
from zaya_edge.artifact import ATTENTION_OP, ZAYA_DOMAIN  # noqa: E402
from zaya_edge.export.attention_op import INPUT_NAMES, OUTPUT_NAMES, attention_function  # noqa: E402

LIB = custom_ops.library_info() if custom_ops.find_library() else None
needs_lib = pytest.mark.skipif(LIB is None, reason="custom-op library not built (make custom-ops)")

HEADS = {"zaya1_8b": (8, 2, 128), "mha_d8": (4, 4, 8), "gqa3_d16": (6, 2, 16)}
# (batch, new tokens, past columns, buffer capacity)
# (1, 12, 2100, 2112): the prefill path with key splits; (1, 9, 600, 600): a past exactly T-S wide
CALLS = [(1, 1, 40, 64), (2, 5, 0, 5), (3, 7, 300, 320), (2, 1, 1500, 1501), (1, 130, 70, 200), (1, 12, 2100, 2112),
         (1, 9, 600, 600)]


def attention_model(heads: int, kv_heads: int, half: bool, window: int) -> bytes:
    cache = ir.DataType.FLOAT16 if half else ir.DataType.FLOAT
    types = {"attention_mask": ir.DataType.INT64, "past_key": cache, "past_value": cache}
    values = [ir.val(n, types.get(n, ir.DataType.FLOAT), None) for n in INPUT_NAMES]
    tape = ir.tape.Tape()
    attrs = {"num_heads": heads, "kv_num_heads": kv_heads, "scale": 0.3, "local_window_size": window}
    outs = tape.op_multi_out(ATTENTION_OP, values, attrs, domain=ZAYA_DOMAIN, num_outputs=3)
    for value, name in zip(outs, OUTPUT_NAMES):
        value.name = name
    graph = ir.Graph(values, list(outs), nodes=tape.nodes, opset_imports={"": 21, ZAYA_DOMAIN: 1}, name="attention")
    function = attention_function("float16" if half else "float32")
    return ir.serde.serialize_model(ir.Model(graph, ir_version=10, functions=[function])).SerializeToString()


def session(model: bytes, native: bool):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if native:
        custom_ops.register(so, LIB.path)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def reference(f: dict, heads: int, kv_heads: int, window: int):
    """(out at real query rows, present key, present value) in float64."""
    q, mask, dtype = f["q"], f["attention_mask"], f["past_key"].dtype
    b, s, _ = q.shape
    t, d, g = mask.shape[1], q.shape[2] // heads, heads // kv_heads
    present = []
    for name, new in (("past_key", f["k"]), ("past_value", f["v"])):
        buf = np.zeros((b, kv_heads, max(t, f[name].shape[2]), d), dtype)
        buf[:, :, : f[name].shape[2]] = f[name]
        buf[:, :, t - s : t] = new.reshape(b, s, kv_heads, d).transpose(0, 2, 1, 3).astype(dtype)
        present.append(buf)
    keys, vals = (p[:, :, :t].astype(np.float64) for p in present)
    np.seterr(invalid="ignore")  # padding queries see no key: NaN rows, never compared
    out = np.zeros((b, s, heads, d))
    cols = np.arange(t)
    for i in range(s):
        c = t - s + i
        sees = (cols <= c) & (mask > 0) & ((cols > c - window) if window > 0 else True)  # [b, t]
        for h in range(heads):
            score = np.einsum("bd,btd->bt", q[:, i, h * d : (h + 1) * d], keys[:, h // g]) * 0.3
            score = np.where(sees, score, -np.inf)
            w = np.exp(score - score.max(-1, keepdims=True))
            out[:, i, h] = np.einsum("bt,btd->bd", w / w.sum(-1, keepdims=True), vals[:, h // g])
    return out.reshape(b, s, -1), present[0], present[1]


def feeds(rng, heads, kv_heads, d, call, half, holes):
    b, s, past, cap = call
    t = past + s
    dtype = np.float16 if half else np.float32
    f = {"q": rng.standard_normal((b, s, heads * d), np.float32), "k": rng.standard_normal((b, s, kv_heads * d), np.float32),
         "v": rng.standard_normal((b, s, kv_heads * d), np.float32),
         "past_key": rng.standard_normal((b, kv_heads, cap, d)).astype(dtype),
         "past_value": rng.standard_normal((b, kv_heads, cap, d)).astype(dtype)}
    mask = np.ones((b, t), np.int64)
    for row in range(1, b):  # left padding of different lengths
        mask[row, : (t * row) // (b + 1)] = 0
    if holes and t > 6:
        mask[0, 1:4] = 0
    f["attention_mask"] = mask
    return f


def compare(name, half, window, holes, native: bool):
    heads, kv_heads, d = HEADS[name]
    sess = session(attention_model(heads, kv_heads, half, window), native)
    rng = np.random.default_rng([list(HEADS).index(name), half, window + 1, holes])
    for call in CALLS:
        if not native and call[0] > 1 and call[1] > 1 and call[2] > 0:
            continue  # CPU GroupQueryAttention refuses it without a shared buffer (the runtime avoids it)
        f = feeds(rng, heads, kv_heads, d, call, half, holes)
        out, pk, pv = sess.run(None, f)
        want, want_k, want_v = reference(f, heads, kv_heads, window)
        t, s = f["attention_mask"].shape[1], call[1]
        real = f["attention_mask"][:, t - s :] > 0  # padding queries: any finite value
        assert np.isfinite(out).all()
        err = np.abs(out - want)[real].max() / np.abs(want[real]).max()
        assert err < 5e-6, (call, err)  # fp32 sums over up to 2K keys
        assert pk.dtype == f["past_key"].dtype and pk.shape == want_k.shape
        np.testing.assert_array_equal(pk[:, :, :t], want_k[:, :, :t])
        np.testing.assert_array_equal(pv[:, :, :t], want_v[:, :, :t])


CASES = [(n, h, w, holes) for n in HEADS for h in (False, True) for w, holes in ((-1, False), (-1, True), (3, False))]


@pytest.mark.parametrize("name,half,window,holes", CASES)
def test_function_body_matches_the_reference(name, half, window, holes):
    compare(name, half, window, holes, native=False)


def kernel_isa() -> str:
    lib = ctypes.CDLL(str(LIB.path))
    lib.ZayaCustomOpsAttentionIsa.restype = ctypes.c_char_p
    return lib.ZayaCustomOpsAttentionIsa().decode()


@needs_lib
@pytest.mark.parametrize("name,half,window,holes", CASES)
def test_native_kernel_matches_the_reference(name, half, window, holes):
    forced = os.environ.get("ZAYA_EDGE_CPU_ISA")
    assert forced is None or kernel_isa() == forced
    before = custom_ops.native_counters(LIB.path)["attention"]["computes"]
    compare(name, half, window, holes, native=True)
    assert custom_ops.native_counters(LIB.path)["attention"]["computes"] == before + len(CALLS)


@needs_lib
@pytest.mark.parametrize("half", [False, True])
def test_native_kernel_writes_the_shared_buffer_in_place(half):
    """Past and present bound to one buffer: only the new columns change, nothing is copied."""
    heads, kv_heads, d = HEADS["zaya1_8b"]
    sess = session(attention_model(heads, kv_heads, half, -1), True)
    f = feeds(np.random.default_rng(5), heads, kv_heads, d, (2, 1, 50, 64), half, False)
    key, value = f["past_key"], f["past_value"]
    before_k, before_v = key.copy(), value.copy()
    io = sess.io_binding()
    for n in ("q", "k", "v", "attention_mask"):
        io.bind_cpu_input(n, f[n])
    for n, buf in (("past_key", key), ("past_value", value)):
        io.bind_input(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    for n, buf in (("present_key", key), ("present_value", value)):
        io.bind_output(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    io.bind_output("out", "cpu")
    sess.run_with_iobinding(io)
    want = f["k"].reshape(2, 1, kv_heads, d).transpose(0, 2, 1, 3).astype(key.dtype)
    np.testing.assert_array_equal(key[:, :, 50:51], want)
    np.testing.assert_array_equal(key[:, :, :50], before_k[:, :, :50])
    np.testing.assert_array_equal(key[:, :, 51:], before_k[:, :, 51:])
    want_v = f["v"].reshape(2, 1, kv_heads, d).transpose(0, 2, 1, 3).astype(value.dtype)
    np.testing.assert_array_equal(value[:, :, 50:51], want_v)
    np.testing.assert_array_equal(value[:, :, :50], before_v[:, :, :50])
    np.testing.assert_array_equal(value[:, :, 51:], before_v[:, :, 51:])


@pytest.mark.parametrize("half", [False, True])
def test_function_body_keeps_the_shared_buffer_past_the_used_columns(half):
    """The fallback, bound as the runtime binds it: columns from T on keep their values."""
    heads, kv_heads, d = HEADS["zaya1_8b"]
    sess = session(attention_model(heads, kv_heads, half, -1), False)
    f = feeds(np.random.default_rng(6), heads, kv_heads, d, (1, 1, 50, 64), half, False)
    key = f["past_key"]
    key[:, :, 51:] = 7
    io = sess.io_binding()
    for n in ("q", "k", "v", "attention_mask"):
        io.bind_cpu_input(n, f[n])
    for n, buf in (("past_key", key), ("past_value", f["past_value"])):
        io.bind_input(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    for n, buf in (("present_key", key), ("present_value", f["past_value"])):
        io.bind_output(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    io.bind_output("out", "cpu")
    sess.run_with_iobinding(io)
    assert (key[:, :, 51:] == 7).all()


@needs_lib
def test_native_kernel_refuses_a_bad_shape_in_one_line():
    heads, kv_heads, d = HEADS["zaya1_8b"]
    sess = session(attention_model(heads, kv_heads, False, -1), True)
    f = feeds(np.random.default_rng(1), heads, kv_heads, d, (1, 1, 10, 10), False, False)
    f["past_key"] = f["past_key"][:, :, :5]  # shorter than the mask's past
    f["past_value"] = f["past_value"][:, :, :5]
    with pytest.raises(Exception, match="past key/value must be"):
        sess.run(None, f)


@needs_lib
def test_native_kernel_refuses_missing_head_counts():
    """A hand-built node without num_heads: one error, not a division by zero."""
    values = [ir.val(n, ir.DataType.INT64 if n == "attention_mask" else ir.DataType.FLOAT, None) for n in INPUT_NAMES]
    tape = ir.tape.Tape()
    outs = tape.op_multi_out(ATTENTION_OP, values, {"kv_num_heads": 2}, domain=ZAYA_DOMAIN, num_outputs=3)
    for value, name in zip(outs, OUTPUT_NAMES):
        value.name = name
    graph = ir.Graph(values, list(outs), nodes=tape.nodes, opset_imports={"": 21, ZAYA_DOMAIN: 1}, name="attention")
    model = ir.serde.serialize_model(ir.Model(graph, ir_version=10, functions=[attention_function()])).SerializeToString()
    f = feeds(np.random.default_rng(2), 8, 2, 128, (1, 1, 10, 10), False, False)
    with pytest.raises(Exception, match="num_heads must be a positive multiple"):
        session(model, True).run(None, f)


@needs_lib
@pytest.mark.skipif(bool(os.environ.get("ZAYA_EDGE_CPU_ISA")), reason="already a run with a forced CPU kernel")
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lower_isa_kernels(isa):
    """The AVX2+F16C and baseline kernels, forced on this machine (a fresh process each)."""
    env = {**os.environ, "ZAYA_EDGE_CPU_ISA": isa}
    args = [sys.executable, "-m", "pytest", __file__, "-x", "-p", "no:cacheprovider", "-k", "native_kernel_matches"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert f"{len(CASES)} passed" in proc.stdout
