"""How the decoder's weights become nodes: what the graph builder asks, and the fp32 answer.

The builder never looks at the precision. It asks its `Layers` object for every weight-bearing
piece — a dense projection, the experts, the embedding table and its lookup, the lm_head, any
other float tensor — and `FloatLayers` answers with MatMul, MoE, Gather and Gemm on fp32 weights,
`QuantizedLayers` (quant_layers.py) with MatMulNBits, QMoE and GatherBlockQuantized.
"""

from __future__ import annotations

import abc

import numpy as np
import onnx_ir as ir

from .checkpoint import Checkpoint
from .emitter import FLOAT, Emitter

MS = "com.microsoft"
_NARROW = {"BF16": ir.DataType.BFLOAT16, "F16": ir.DataType.FLOAT16}

# MoE and QMoE run the same experts: top-1 of a one-hot selection, SwiGLU fused into fc1
# (swiglu_fusion=1 reads fc1 with gate row j at 2j and up row j at 2j+1: interleave_gate_up).
SWIGLU_TOP1 = {"k": 1, "activation_type": "swiglu", "swiglu_fusion": 1, "activation_alpha": 1.0,
               "activation_beta": 0.0}


def interleave_gate_up(gate_up: np.ndarray) -> np.ndarray:
    """[.., 2I, H] gate rows then up rows -> rows 2j = gate j, 2j+1 = up j (swiglu_fusion=1)."""
    inter = gate_up.shape[-2] // 2
    out = np.empty_like(gate_up)
    out[..., 0::2, :], out[..., 1::2, :] = gate_up[..., :inter, :], gate_up[..., inter:, :]
    return out


class Layers(abc.ABC):
    """The weight-bearing pieces of the graph, emitted into `e` from `ckpt`."""

    # Quantized exports keep a bf16/fp16 float tensor in its own dtype (exact) behind a Cast;
    # fp32 exports store every float tensor as fp32.
    keeps_narrow_floats = False

    def __init__(self, e: Emitter, ckpt: Checkpoint):
        self.e, self.ckpt = e, ckpt

    def tensor(self, name: str, transform=None, shape=None) -> ir.Value:
        """A lazy fp32 value from one checkpoint tensor (optionally transformed)."""
        ckpt = self.ckpt
        src_shape = tuple(ckpt.shape(name))
        store = _NARROW.get(ckpt.dtype(name), FLOAT) if self.keeps_narrow_floats else FLOAT

        def produce(name=name, transform=transform):
            arr = ckpt.read(name)
            arr = np.ascontiguousarray(transform(arr) if transform else arr, dtype=np.float32)
            return _narrow(arr, store, name)

        value = self.e.weight(name, store, shape or src_shape, produce)
        if store != FLOAT:
            value = self.e.op("Cast", f"/model/weights/{name}", [value], {"to": FLOAT})
        return value

    def bias(self, name: str, sources: list[str]) -> ir.Value:
        """fp32 [N]: the biases of fused projections, concatenated (one source: that tensor itself)."""
        if len(sources) == 1:
            return self.tensor(sources[0])
        ckpt = self.ckpt
        rows = sum(ckpt.shape(n)[0] for n in sources)
        return self.e.weight(name, FLOAT, (rows,), lambda: np.concatenate([ckpt.read(n) for n in sources]).astype(np.float32))

    def linear(self, path: str, x: ir.Value, name: str, sources: list[str], bias: ir.Value | None = None) -> ir.Value:
        """x · Wᵀ (+ bias) for the row-concatenation W of several nn.Linear weights (one fused node)."""
        ckpt = self.ckpt
        rows, cols = sum(ckpt.shape(n)[0] for n in sources), ckpt.shape(sources[0])[1]
        return self.matmul(path, x, name, rows, cols, lambda: np.concatenate([ckpt.read(n) for n in sources], axis=0),
                           bias)

    @abc.abstractmethod
    def matmul(self, path: str, x: ir.Value, name: str, rows: int, cols: int, produce, bias=None) -> ir.Value:
        """x · Wᵀ (+ bias) for a [rows, cols] weight W (nn.Linear layout) that `produce()` returns in fp32."""

    @abc.abstractmethod
    def experts(self, path: str, prefix: str, flat, select, weight) -> ir.Value:
        """The experts under `path` on flat [N,H]: one-hot `select` [N,E], router `weight` [N,E]."""

    def dense_experts(self, path: str, prefix: str, flat, select, weight, dims) -> ir.Value:
        """Experts of an activation the MoE kernels do not fuse (experts.py): every expert, densely."""
        from .experts import dense_experts

        return dense_experts(self, path, prefix, flat, weight, dims)

    def functions(self) -> list:
        """Model-local functions the emitted nodes need (beyond the Router's)."""
        return []

    @abc.abstractmethod
    def table(self, name: str):
        """The [V, H] embedding (or lm_head) table, stored once for the lookup and the head."""

    @abc.abstractmethod
    def embed(self, path: str, table, ids) -> ir.Value:
        """ids [B,S] ─ lookup(table) ─► [B,S,H]"""

    @abc.abstractmethod
    def head(self, path: str, table, flat, bias=None) -> ir.Value:
        """flat [N,H] ─ · tableᵀ (+ bias) ─► logits [N,V]"""


class FloatLayers(Layers):
    """fp32 weights: the exact reference."""

    def matmul(self, path, x, name, rows, cols, produce, bias=None):
        """MatMul on the [in, out] transpose, stored fp32."""
        weight = self.e.weight(name + ".weight_t", FLOAT, (cols, rows), lambda: produce().T)
        y = self.e.op("MatMul", path, [x, weight])
        return y if bias is None else self.e.op("Add", f"{path}/bias", [y, bias])

    def experts(self, path, prefix, flat, select, weight):
        """MoE picks the one-hot expert with weight 1; the router weight multiplies after."""
        e = self.e
        fc1 = self.tensor(prefix + "gate_up_proj", transform=interleave_gate_up)
        fc2 = self.tensor(prefix + "down_proj")
        y = e.op("MoE", f"{path}/experts", [flat, select, fc1, None, fc2],
                 {**SWIGLU_TOP1, "normalize_routing_weights": 1}, domain=MS)
        w = e.op("ReduceSum", f"{path}/route_weight", [weight, e.i64([1])], {"keepdims": 1})
        return e.op("Mul", f"{path}/weighted", [y, w])

    def table(self, name):
        return self.tensor(name)

    def embed(self, path, table, ids):
        return self.e.op("Gather", path, [table, ids], {"axis": 0})

    def head(self, path, table, flat, bias=None):
        inputs = [flat, table] + ([bias] if bias is not None else [])
        return self.e.op("Gemm", f"{path}/Gemm", inputs, {"transB": 1})


def _narrow(arr: np.ndarray, store: ir.DataType, name: str) -> np.ndarray:
    """fp32 values read from a bf16/fp16 tensor, back in that dtype (must be exact)."""
    if store == FLOAT:
        return arr
    if store == ir.DataType.BFLOAT16:
        bits = arr.view(np.uint32)
        if (bits & 0xFFFF).any():
            raise AssertionError(f"{name}: values are not bf16 after the transform")
        return (bits >> 16).astype(np.uint16)
    out = arr.astype(np.float16)
    if not np.array_equal(out.astype(np.float32), arr, equal_nan=True):
        raise AssertionError(f"{name}: values are not fp16 after the transform")
    return out
