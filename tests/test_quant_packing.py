"""Quantized layouts against a numpy dequantization written from the kernels' documented formats,
and against onnxruntime's own MatMulNBits / QMoE / GatherBlockQuantized on those bytes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from zaya_edge.export import quant_layers as QL
from zaya_edge.export.checkpoint import Checkpoint
from zaya_edge.export.emitter import Emitter
from zaya_edge.export.quant import QuantSpec
from zaya_edge.export.layers import interleave_gate_up
from zaya_edge.export.quant_layout import matmulnbits_arrays, qmoe_expert, qmoe_pack

MS = "com.microsoft"
SPECS = [QuantSpec(4, 32, True), QuantSpec(4, 16, False), QuantSpec(8, 32, True), QuantSpec(8, 64, False),
         QuantSpec(4, 32, True, "mse"), QuantSpec(4, 32, False, "mse")]


# ---- an independent reference: bytes -> fp32 -----------------------------------------------------
def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Bytes -> stored values along the last axis (4 bits: low nibble is the even element)."""
    if bits == 8:
        return packed.astype(np.int32)
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.int32)
    out[..., 0::2], out[..., 1::2] = packed & 0x0F, packed >> 4
    return out


def dequant(values: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, bits: int, block: int, k: int):
    """values [rows, n_blocks*block] (stored), scales/zero points [rows, n_blocks] -> fp32 [rows, k]."""
    rows, nb = scales.shape
    zp = np.full((rows, nb), 1 << (bits - 1)) if zero_points is None else zero_points[:, :nb]
    zp = zp.astype(np.float32)
    v = values.reshape(rows, nb, block).astype(np.float32)
    w = (v - zp[..., None]) * scales.astype(np.float32)[..., None]
    return w.reshape(rows, -1)[:, :k]


def _session(nodes, inputs, outputs, initializers, tmp_path):
    graph = ir.Graph(inputs, outputs, nodes=nodes, initializers=initializers,
                     opset_imports={"": 21, MS: 1}, name="t")
    ir.save(ir.Model(graph, ir_version=10), tmp_path / "m.onnx")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(tmp_path / "m.onnx"), so, providers=["CPUExecutionProvider"])


def _matmulnbits_ref(w, spec):
    arrays = matmulnbits_arrays(w, spec)
    n, k = w.shape
    nb = arrays["scales"].shape[1]
    zp = None if spec.symmetric else unpack(arrays["zero_points"], spec.bits)
    values = unpack(arrays["B"], spec.bits).reshape(n, nb * spec.block_size)
    return arrays, dequant(values, arrays["scales"], zp, spec.bits, spec.block_size, k)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_matmulnbits_bytes_dequantize_close_to_weights(spec):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 128)).astype(np.float32) * 0.05
    arrays, ref = _matmulnbits_ref(w, spec)
    assert arrays["B"].dtype == np.uint8 and arrays["B"].shape == (48, 128 // spec.block_size, spec.block_size * spec.bits // 8)
    assert arrays["scales"].shape == (48, 128 // spec.block_size) and arrays["scales"].dtype == np.float16
    assert ("zero_points" in arrays) == (not spec.symmetric)
    step = np.repeat(np.abs(arrays["scales"]), spec.block_size, axis=1)
    err = (ref - w) ** 2
    assert err.mean() < 0.15 * (step**2).mean()  # uniform rounding error is step²/12
    rtn_spec = QuantSpec(spec.bits, spec.block_size, spec.symmetric, "rtn")
    _, rtn = _matmulnbits_ref(w, rtn_spec)
    if spec.method == "rtn":  # only the block's edge value can clip, by at most one step
        assert (np.abs(ref - w) <= step + 1e-7).all()
    else:  # the search includes the RTN scale, so no block gets worse
        block_err = lambda d: ((d - w) ** 2).reshape(48, -1, spec.block_size).sum(-1)
        assert (block_err(ref) <= block_err(rtn) * (1 + 1e-5) + 1e-12).all()
        assert block_err(ref).sum() < block_err(rtn).sum()


@pytest.mark.parametrize("spec", [QuantSpec(4, 32, True), QuantSpec(4, 32, False), QuantSpec(8, 16, False)], ids=str)
@pytest.mark.parametrize("k", [128, 80])  # 80: the last block is padded
def test_matmulnbits_kernel_reads_our_bytes(tmp_path, spec, k):
    rng = np.random.default_rng(1)
    n = 24
    w = rng.standard_normal((n, k)).astype(np.float32)
    arrays, ref = _matmulnbits_ref(w, spec)
    x = ir.val("x", ir.DataType.FLOAT, (3, k))
    arrays["scales"] = arrays["scales"].astype(np.float32)  # exact; MatMulNBits wants A's type
    inits = {key: ir.Value(name=key, const_value=ir.tensor(arr, name=key)) for key, arr in arrays.items()}
    node = ir.node("MatMulNBits", [x, inits["B"], inits["scales"], inits.get("zero_points")], domain=MS,
                   attributes={"K": k, "N": n, "bits": spec.bits, "block_size": spec.block_size, "accuracy_level": 0})
    node.outputs[0].name = "y"
    inits.pop("gather_zero_points", None)
    sess = _session([node], [x], [node.outputs[0]], list(inits.values()), tmp_path)
    a = rng.standard_normal((3, k)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": a})[0], a @ ref.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", [QuantSpec(4, 16, True), QuantSpec(4, 32, False), QuantSpec(8, 32, True)], ids=str)
def test_qmoe_fc1_fc2_layout(tmp_path, spec):
    """Gate/up interleaving, scales and zero points as QMoE reads them; weight 0 gives exactly 0."""
    rng = np.random.default_rng(2)
    n_exp, hidden, inter, tokens = 3, 32, 64, 7
    gate_up = rng.standard_normal((n_exp, 2 * inter, hidden)).astype(np.float32) * 0.3
    down = rng.standard_normal((n_exp, hidden, inter)).astype(np.float32) * 0.3
    fc1 = [qmoe_pack(qmoe_expert(interleave_gate_up(gate_up[e]), spec), spec) for e in range(n_exp)]
    fc2 = [qmoe_pack(qmoe_expert(down[e], spec), spec) for e in range(n_exp)]
    stacked = {f"fc{j}_{key}": np.stack([p[key] for p in parts]) for j, parts in ((1, fc1), (2, fc2)) for key in parts[0]}
    assert stacked["fc1_weights"].shape == (n_exp, 2 * inter, hidden * spec.bits // 8)
    assert stacked["fc1_scales"].dtype == np.float16

    def deq(j, e, rows, k):
        zp = None if spec.symmetric else unpack(stacked[f"fc{j}_zero_points"][e], spec.bits)
        return dequant(unpack(stacked[f"fc{j}_weights"][e], spec.bits), stacked[f"fc{j}_scales"][e], zp,
                       spec.bits, spec.block_size, k)

    x = rng.standard_normal((tokens, hidden)).astype(np.float32)
    choice = rng.integers(0, n_exp, tokens)
    select = np.eye(n_exp, dtype=np.float32)[choice]
    weight = select * rng.uniform(0.2, 1.0, (tokens, 1)).astype(np.float32)
    weight[2] = 0.0  # a skipped token
    ref = np.zeros((tokens, hidden), np.float32)
    for t in range(tokens):
        e = choice[t]
        w1 = deq(1, e, 2 * inter, hidden)
        gate, up = x[t] @ w1[0::2].T, x[t] @ w1[1::2].T  # interleaved rows: gate j at 2j, up j at 2j+1
        np.testing.assert_allclose(w1[0::2], gate_up[e, :inter], atol=np.abs(gate_up).max() / 4)
        ref[t] = weight[t, e] * ((gate / (1 + np.exp(-gate)) * up) @ deq(2, e, hidden, inter).T)

    vals = {n: ir.val(n, ir.DataType.FLOAT, (tokens, d)) for n, d in (("x", hidden), ("probs", n_exp), ("w", n_exp))}
    inits = {k: ir.Value(name=k, const_value=ir.tensor(v, name=k)) for k, v in stacked.items()}
    node = ir.node(
        "QMoE",
        [vals["x"], vals["probs"], inits["fc1_weights"], inits["fc1_scales"], None, inits["fc2_weights"],
         inits["fc2_scales"], None, None, None, None, inits.get("fc1_zero_points"), inits.get("fc2_zero_points"),
         None, vals["w"]],
        domain=MS,
        attributes={"k": 1, "activation_type": "swiglu", "swiglu_fusion": 1, "activation_alpha": 1.0,
                    "activation_beta": 0.0, "normalize_routing_weights": 0, "expert_weight_bits": spec.bits,
                    "block_size": spec.block_size},
    )
    node.outputs[0].name = "y"
    sess = _session([node], list(vals.values()), [node.outputs[0]], list(inits.values()), tmp_path)
    y = sess.run(None, {"x": x, "probs": select, "w": weight})[0]
    tol = 1e-3 * np.abs(ref).max() if spec.bits == 4 else 2e-2 * np.abs(ref).max()  # 8-bit QMoE quantizes activations
    np.testing.assert_allclose(y, ref, atol=tol)
    assert (y[2] == 0).all()


class _ArrayCheckpoint(Checkpoint):
    """Just enough of a checkpoint for QuantizedLayers: named fp32 arrays."""

    def __init__(self, arrays):
        self.arrays = arrays

    def names(self):
        return set(self.arrays)

    def shape(self, name):
        return self.arrays[name].shape

    def read(self, name):
        return self.arrays[name]

    def dtype(self, name):
        return "F32"


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True)])
def test_shared_table_lookup_equals_dequantized_head_row(tmp_path, monkeypatch, bits, symmetric):
    monkeypatch.setattr(QL, "ACCURACY_LEVEL", 0)  # exact products, to compare with the numpy reference
    monkeypatch.setattr(QL, "_EMBED_ROWS", 40)  # several row slices
    rng = np.random.default_rng(3)
    vocab, hidden = 100, 64
    table = rng.standard_normal((vocab, hidden)).astype(np.float32)
    spec = QuantSpec(bits, 16, symmetric)
    e = Emitter()
    layers = QL.QuantizedLayers(e, _ArrayCheckpoint({"embed": table}), spec, bits)
    t = layers.table("embed")
    ids = ir.val("ids", ir.DataType.INT64, (1, 5))
    h = ir.val("h", ir.DataType.FLOAT, (5, hidden))
    rows = layers.embed("/embed", t, ids)
    logits = layers.head("/head", t, h)
    rows.name, logits.name = "rows", "logits"
    graph_nodes = list(e.tape.nodes)
    gather = next(n for n in graph_nodes if n.op_type == "GatherBlockQuantized")
    head = next(n for n in graph_nodes if n.op_type == "MatMulNBits")
    assert gather.inputs[0] is head.inputs[1]  # one packed initializer serves both
    sess = _session(graph_nodes, [ids, h], [rows, logits], list(e.tape.initializers), tmp_path)
    ids_np = np.array([[0, 7, 39, 40, 99]])
    h_np = rng.standard_normal((5, hidden)).astype(np.float32)
    got_rows, got_logits = sess.run(None, {"ids": ids_np, "h": h_np})
    _, ref = _matmulnbits_ref(table, spec)  # the head's dequantized rows
    np.testing.assert_array_equal(got_rows[0], ref[ids_np[0]])
    np.testing.assert_allclose(got_logits, h_np @ ref.T, rtol=1e-4, atol=1e-4)
