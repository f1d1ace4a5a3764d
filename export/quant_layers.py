"""The int4/int8 layers of the decoder graph: MatMulNBits projections, QMoE experts, and one
quantized embedding table read by both GatherBlockQuantized (lookup) and MatMulNBits (lm_head).

Weights stay lazy: one quantization feeds several initializers (packed values, scales, zero
points), so it runs when the saver reaches the first of them and is dropped after the last.
Big tensors are read in slices (one expert, a few thousand embedding rows) to bound memory.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

from .checkpoint import Checkpoint
from .emitter import Emitter
from zaya_edge.artifact import EXPERT_MOE_OP, ZAYA_DOMAIN

from .experts import dense_experts
from .layers import MS, SWIGLU_TOP1, Layers, interleave_gate_up
from .moe_op import ACTIVATIONS, expert_moe_function
from .quant import QuantSpec, whole_blocks
from .quant_layout import matmulnbits_arrays, matmulnbits_shapes, qmoe_expert, qmoe_pack, qmoe_shapes

ACCURACY_LEVEL = 4  # int8 activations: 2.6-4x faster decode for ~0.5% error (onnxruntime-notes)
# Scales are stored as fp16 (half their bytes; 4.5 instead of 5 bits per weight at block 32):
# QMoE reads them as they are, MatMulNBits (scales must match the fp32 activations) through a
# Cast that onnxruntime constant-folds at load, so its weights are still prepacked.
SCALE_DTYPE = np.float16
_EMBED_ROWS = 16384  # embedding rows quantized per slice (~128 MB of fp32 at H = 2048)

_DTYPES = {np.dtype(np.uint8): ir.DataType.UINT8, np.dtype(np.float32): ir.DataType.FLOAT,
           np.dtype(np.float16): ir.DataType.FLOAT16}


class _Parts:
    """Computes a dict of arrays once and hands each out once; recomputes if asked again."""

    def __init__(self, compute: Callable[[], dict[str, np.ndarray]]):
        self._compute = compute
        self._parts: dict[str, np.ndarray] | None = None

    def take(self, key: str) -> Callable[[], np.ndarray]:
        def produce() -> np.ndarray:
            if self._parts is None or key not in self._parts:
                self._parts = self._compute()
            arr = self._parts.pop(key)
            if not self._parts:
                self._parts = None
            return arr

        return produce


class QuantTable:
    """A quantized [V, H] matrix shared by the embedding lookup and the lm_head."""

    def __init__(self, values: dict[str, ir.Value], scales: ir.Value, spec: QuantSpec, rows: int, cols: int):
        self.values, self.scales, self.spec, self.rows, self.cols = values, scales, spec, rows, cols
        self.gather_scales: ir.Value | None = None


class QuantizedLayers(Layers):
    """Block-quantized weights; other float tensors keep the checkpoint's bf16/fp16 (exact)."""

    keeps_narrow_floats = True

    def __init__(self, e: Emitter, ckpt: Checkpoint, spec: QuantSpec, table_bits: int, fused_moe: bool = False):
        super().__init__(e, ckpt)
        self.spec = spec
        self.table_spec = QuantSpec(table_bits, spec.block_size, spec.symmetric, spec.method)
        self.fused_moe = fused_moe  # experts as ai.zaya::ExpertMoE nodes (the plan checked they apply)
        self._moe_function: ir.Function | None = None

    def _initializers(self, prefix: str, shapes: dict, dtypes: dict, parts: _Parts) -> dict[str, ir.Value]:
        return {
            key: self.e.weight(f"{prefix}.{key}", _DTYPES[np.dtype(dtypes[key])], shape, parts.take(key))
            for key, shape in shapes.items()
        }

    # ---- dense projections ------------------------------------------------------------------
    def matmul(self, path, x, name, rows, cols, produce, bias=None):
        w = self._matmul_weights(name, rows, cols, produce)
        return self._matmulnbits(path, x, w, self._fp32(name, w["scales"]), rows, cols, self.spec, bias)

    def _matmul_weights(self, name, rows, cols, produce) -> dict[str, ir.Value]:
        """MatMulNBits' initializers of a [rows, cols] weight."""
        spec = self.spec

        def compute():
            out = matmulnbits_arrays(produce(), spec)
            out.pop("gather_zero_points", None)
            return out

        dtypes = {"B": np.uint8, "scales": SCALE_DTYPE, "zero_points": np.uint8}
        return self._initializers(name, matmulnbits_shapes(rows, cols, spec), dtypes, _Parts(compute))

    def _fp32(self, name: str, scales: ir.Value) -> ir.Value:
        return self.e.op("Cast", f"/model/weights/{name}.scales", [scales], {"to": ir.DataType.FLOAT})

    def _matmulnbits(self, path, x, w, scales, n, k, spec, bias=None):
        return self.e.op(
            "MatMulNBits", path, [x, w["B"], scales, w.get("zero_points"), None, bias],
            {"K": k, "N": n, "bits": spec.bits, "block_size": spec.block_size, "accuracy_level": ACCURACY_LEVEL},
            domain=MS,
        )

    # ---- experts ----------------------------------------------------------------------------
    def experts(self, path: str, prefix: str, flat, select, weight) -> ir.Value:
        """QMoE: top-1 on the one-hot `select`, mixed with `weight` (0 for skipped tokens).

            flat [N,H] ─ QMoE(fc1 = gate|up interleaved, SwiGLU, fc2) ─► [N,H]
            select [N,E] (router_probs) ─┘   weight [N,E] (router_weights, not renormalised)

        QMoE takes whole blocks only: a hidden or intermediate size the block does not divide is
        zero-padded to the next multiple (zero gate/up rows add silu(0)·0 = 0, zero down columns
        nothing), flat is padded to match and the output cut back to H.
        """
        ckpt, spec = self.ckpt, self.spec
        gate_up, down = prefix + "gate_up_proj", prefix + "down_proj"
        n_exp, _, h = ckpt.shape(gate_up)
        inter = ckpt.shape(down)[2]
        hp, ip = padded(h, spec.block_size), padded(inter, spec.block_size)

        def compute(name, transform):
            def run():
                parts = []
                for x in range(n_exp):  # one expert at a time: [rows, K] fp32 in memory
                    w = transform(ckpt.read_rows(name, x, x + 1)[0])
                    parts.append(qmoe_pack(qmoe_expert(w, spec, SCALE_DTYPE), spec))
                return {key: np.stack([p[key] for p in parts]) for key in parts[0]}

            return run

        dtypes = {"weights": np.uint8, "scales": SCALE_DTYPE, "zero_points": np.uint8}
        fc1 = self._initializers(gate_up + ".qmoe", qmoe_shapes(n_exp, 2 * ip, hp, spec), dtypes,
                                 _Parts(compute(gate_up, lambda w: interleave_gate_up(_pad_gate_up(w, ip, hp)))))
        fc2 = self._initializers(down + ".qmoe", qmoe_shapes(n_exp, hp, ip, spec), dtypes,
                                 _Parts(compute(down, lambda w: _pad(w, hp, ip))))
        if hp != h:
            flat = self.e.op("Pad", f"{path}/pad_hidden", [flat, self.e.i64([0, 0, 0, hp - h])])
        if self.fused_moe:
            y = self._expert_moe(path, [flat, select, weight, fc1["weights"], fc1["scales"], fc2["weights"],
                                        fc2["scales"]])
        else:
            y = self._qmoe(path, flat, select, weight, fc1, fc2)
        return y if hp == h else self.e.op("Slice", f"{path}/unpad_hidden", [y, self.e.i64([0]), self.e.i64([h]), self.e.i64([1])])

    def _qmoe(self, path: str, flat, select, weight, fc1: dict, fc2: dict) -> ir.Value:
        inputs = [
            flat, select,
            fc1["weights"], fc1["scales"], None,
            fc2["weights"], fc2["scales"], None,
            None, None, None,
            fc1.get("zero_points"), fc2.get("zero_points"), None,
            weight,
        ]
        return self.e.op(
            "QMoE", f"{path}/experts", inputs,
            {**SWIGLU_TOP1, "normalize_routing_weights": 0, "expert_weight_bits": self.spec.bits,
             "block_size": self.spec.block_size, "accuracy_level": ACCURACY_LEVEL},
            domain=MS,
        )

    def dense_experts(self, path, prefix, flat, select, weight, dims):
        """experts.dense_experts, or (fused) one ExpertMoE node over the same MatMulNBits initializers."""
        if not self.fused_moe:
            return dense_experts(self, path, prefix, flat, weight, dims)
        ckpt, E, H, I = self.ckpt, dims.num_experts, dims.hidden_size, dims.moe_intermediate_size
        fc1 = self._matmul_weights(prefix + "gate_up_proj.all", E * 2 * I, H,
                                   lambda: ckpt.read(prefix + "gate_up_proj").reshape(E * 2 * I, H))
        fc2 = self._matmul_weights(prefix + "down_proj.all", H, E * I,
                                   lambda: ckpt.read(prefix + "down_proj").transpose(1, 0, 2).reshape(H, E * I))
        return self._expert_moe(path, [flat, select, weight, fc1["B"], fc1["scales"], fc2["B"], fc2["scales"]])

    def _expert_moe(self, path: str, inputs: list) -> ir.Value:
        """One ai.zaya::ExpertMoE node; the model gets the op's function body once."""
        d = self.ckpt.dims
        if self._moe_function is None:
            self._moe_function = expert_moe_function(d.hidden_act, d.num_experts, d.moe_intermediate_size, d.hidden_size)
        attrs = {"activation": ACTIVATIONS[d.hidden_act], "block_size": self.spec.block_size,
                 "accuracy_level": ACCURACY_LEVEL}
        return self.e.op(EXPERT_MOE_OP, f"{path}/experts", inputs, attrs, domain=ZAYA_DOMAIN)

    def functions(self) -> list[ir.Function]:
        return [self._moe_function] if self._moe_function is not None else []

    # ---- the embedding table ----------------------------------------------------------------
    def table(self, name: str) -> QuantTable:
        """Quantize [V, H] in row slices; the packed table and its scales are stored once."""
        ckpt, spec = self.ckpt, self.table_spec
        rows, cols = ckpt.shape(name)

        def compute():
            shapes = matmulnbits_shapes(rows, cols, spec)
            out = {k: np.empty(s, np.uint8) for k, s in shapes.items()}
            out["scales"] = np.empty(shapes["scales"], SCALE_DTYPE)
            if not spec.symmetric:
                out["gather_zero_points"] = np.empty(shapes["scales"] + (1,), np.uint8)
            for r0 in range(0, rows, _EMBED_ROWS):
                r1 = min(rows, r0 + _EMBED_ROWS)
                for k, arr in matmulnbits_arrays(ckpt.read_rows(name, r0, r1), spec).items():
                    out[k][r0:r1] = arr
            return out

        shapes = matmulnbits_shapes(rows, cols, spec)
        if not spec.symmetric:
            shapes["gather_zero_points"] = shapes["scales"] + (1,)
        dtypes = {"B": np.uint8, "scales": SCALE_DTYPE, "zero_points": np.uint8, "gather_zero_points": np.uint8}
        prefix = f"{name}.q{spec.bits}"
        values = self._initializers(prefix, shapes, dtypes, _Parts(compute))
        return QuantTable(values, self._fp32(prefix, values["scales"]), spec, rows, cols)

    def embed(self, path: str, table: QuantTable, ids) -> ir.Value:
        """ids [B,S] ─ GatherBlockQuantized(table) ─► [B,S,n_blocks,block] ─ Reshape ─► [B,S,H]"""
        e, spec = self.e, table.spec
        if table.gather_scales is None:
            table.gather_scales = e.op("Unsqueeze", f"{path}/scales_3d", [table.scales, e.i64([2])])
        rows = e.op(
            "GatherBlockQuantized", path,
            [table.values["B"], ids, table.gather_scales, table.values.get("gather_zero_points")],
            {"bits": spec.bits, "block_size": spec.block_size, "gather_axis": 0, "quantize_axis": 2},
            domain=MS,
        )
        width = padded(table.cols, spec.block_size)
        rows = e.op("Reshape", f"{path}/rows", [rows, e.i64([0, 0, width])])
        if width == table.cols:
            return rows
        return e.op("Slice", f"{path}/unpad", [rows, e.i64([0]), e.i64([table.cols]), e.i64([2])])

    def head(self, path: str, table: QuantTable, flat, bias=None) -> ir.Value:
        """flat [N,H] ─ MatMulNBits(tableᵀ) ─► logits [N,V]"""
        return self._matmulnbits(path, flat, table.values, table.scales, table.rows, table.cols, table.spec, bias)



def padded(size: int, block: int) -> int:
    """`size` rounded up to whole blocks."""
    return whole_blocks(size, block) * block


def _pad(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """w [r, c] in the top-left corner of zeros [rows, cols] (itself when nothing is added)."""
    if w.shape == (rows, cols):
        return w
    out = np.zeros((rows, cols), np.float32)
    out[: w.shape[0], : w.shape[1]] = w
    return out


def _pad_gate_up(w: np.ndarray, inter: int, cols: int) -> np.ndarray:
    """[2I, H] gate rows then up rows -> [2·inter, cols], each half padded on its own."""
    half = w.shape[0] // 2
    return np.concatenate([_pad(w[:half], inter, cols), _pad(w[half:], inter, cols)])
