"""The experts of one MoE layer as one private-domain operator, `ai.zaya::ExpertMoE`.

The node replaces the int4 expert subgraph the exporter otherwise emits (QMoE for SiLU, the dense
MatMulNBits graph of experts.py for other activations); its model-local function body *is* that
subgraph, so stock onnxruntime (and onnxruntime-genai) inline it and compute exactly what the
portable export computes, while the native kernel (custom_ops/src/moe_*.cc) reads the same stored
int4 blocks in place instead of a repacked copy. Routing stays in `ai.zaya::Router`: the op takes
its outputs, so the Router's own native kernel and fallback are unchanged.

Inputs (N tokens, H hidden — whole blocks: the QMoE layout pads it —, E experts, I intermediate):
    0 x              [N, H]  fp32
    1 expert_select  [N, E]  the Router's one-hot (SwiGLU: the expert is its top-1, as QMoE takes it)
    2 expert_weight  [N, E]  the Router's weights (0 for skipped tokens)
    3 fc1 uint8, 4 fc1_scales fp16, 5 fc2 uint8, 6 fc2_scales fp16: the stored int4 blocks
        swiglu  QMoE's layout: fc1 [E, 2I, H/2] (gate row j at 2j, up row j at 2j+1), scales
                [E, 2I, H/block]; fc2 [E, H, I/2], scales [E, H, I/block]
        others  MatMulNBits' layout of the dense graph: fc1 [E·2I, H/block, block/2] (each
                expert's gate rows, then its up rows), scales [E·2I, H/block]; fc2
                [H, E·I/block, block/2] (expert e's columns e·I..), scales [H, E·I/block]
Attributes: activation (swiglu | gelu | gelu_tanh | relu | relu2), block_size, accuracy_level
    (4: activations quantized to int8 per block, as onnxruntime's kernels do; 0: fp32).
Output: y [N, H]
    swiglu  y = w · fc2(silu(gate) · up) for the chosen expert (0 when w <= 1e-8: skipped)
    others  y = Σ_e fc2_e((act(gate_e) · up_e) · w_e)   (one e has w_e != 0, none when skipped)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zaya_edge.artifact import EXPERT_MOE_OP, ZAYA_DOMAIN

from .experts import FUSED, TANH_GELU, activation

INPUT_NAMES = ("x", "expert_select", "expert_weight", "fc1", "fc1_scales", "fc2", "fc2_scales")
OUTPUT_NAME = "y"
MS = "com.microsoft"
# hidden_act -> the op's activation attribute (the native kernel implements these; others stay portable)
ACTIVATIONS = {**{n: "swiglu" for n in FUSED}, "gelu": "gelu", "gelu_python": "gelu", "relu": "relu",
               "relu2": "relu2", **{n: "gelu_tanh" for n in TANH_GELU}}


class _BodyEmitter:
    """The two Emitter calls experts.activation makes, on a function body's tape (constants as nodes)."""

    def __init__(self, tape: ir.tape.Tape):
        self.tape = tape

    def const(self, value, dtype=None) -> ir.Value:
        return self.tape.op("Constant", [], {"value": ir.tensor(np.asarray(value, dtype=dtype))})

    def i64(self, value) -> ir.Value:
        return self.const(np.asarray(value, np.int64))

    def op(self, op_type, path, inputs, attrs=None, domain="", outputs=1):
        del path  # function-body nodes need no names
        values = self.tape.op_multi_out(op_type, list(inputs), attrs, num_outputs=outputs, domain=domain)
        return values[0] if outputs == 1 else tuple(values)


def _ref(name: str) -> ir.RefAttr:
    return ir.RefAttr(name, name, ir.AttributeType.INT)


def _qmoe_body(e: _BodyEmitter, ins: dict) -> ir.Value:
    """QMoE exactly as QuantizedLayers.experts emits it (top-1, SwiGLU, not renormalised)."""
    inputs = [ins["x"], ins["expert_select"], ins["fc1"], ins["fc1_scales"], None, ins["fc2"], ins["fc2_scales"],
              None, None, None, None, None, None, None, ins["expert_weight"]]
    attrs = {"k": 1, "activation_type": "swiglu", "swiglu_fusion": 1, "activation_alpha": 1.0, "activation_beta": 0.0,
             "normalize_routing_weights": 0, "expert_weight_bits": 4, "block_size": _ref("block_size"),
             "accuracy_level": _ref("accuracy_level")}
    return e.op("QMoE", "", inputs, attrs, domain=MS)


def _dense_body(e: _BodyEmitter, ins: dict, hidden_act: str, experts: int, inter: int, hidden: int) -> ir.Value:
    """experts.dense_experts on QuantizedLayers' MatMulNBits, node for node."""
    def matmul(x, b, scales, n, k):
        s = e.op("Cast", "", [scales], {"to": ir.DataType.FLOAT})
        return e.op("MatMulNBits", "", [x, b, s], {"K": k, "N": n, "bits": 4, "block_size": _ref("block_size"),
                                                   "accuracy_level": _ref("accuracy_level")}, domain=MS)

    gate_up = matmul(ins["x"], ins["fc1"], ins["fc1_scales"], experts * 2 * inter, hidden)
    gate_up = e.op("Reshape", "", [gate_up, e.i64([0, experts, 2, inter])])
    gate, up = e.op("Split", "", [gate_up, e.i64([1, 1])], {"axis": 2}, outputs=2)
    h = e.op("Mul", "", [activation(e, "", gate, hidden_act), up])
    h = e.op("Mul", "", [h, e.op("Unsqueeze", "", [ins["expert_weight"], e.i64([2, 3])])])
    h = e.op("Reshape", "", [h, e.i64([0, experts * inter])])
    return matmul(h, ins["fc2"], ins["fc2_scales"], hidden, experts * inter)


def expert_moe_function(hidden_act: str, experts: int, inter: int, hidden: int) -> ir.Function:
    """The op's function body for one model: its hidden_act and sizes (every layer shares them)."""
    ins = {n: ir.Value(name=n) for n in INPUT_NAMES}
    tape = ir.tape.Tape()
    e = _BodyEmitter(tape)
    if ACTIVATIONS[hidden_act] == "swiglu":
        y = _qmoe_body(e, ins)
    else:
        y = _dense_body(e, ins, hidden_act, experts, inter, hidden)
    y.name = OUTPUT_NAME
    graph = ir.Graph(inputs=list(ins.values()), outputs=[y], nodes=tape.nodes, opset_imports={"": 21, MS: 1},
                     name=EXPERT_MOE_OP)
    attrs = [ir.Attr("activation", ir.AttributeType.STRING, ACTIVATIONS[hidden_act]),
             ir.Attr("block_size", ir.AttributeType.INT, 32), ir.Attr("accuracy_level", ir.AttributeType.INT, 4)]
    return ir.Function(ZAYA_DOMAIN, EXPERT_MOE_OP, graph=graph, attributes=attrs)


def fusable(hidden_act: str, bits: int, symmetric: bool, sizes: tuple[int, ...], block: int) -> bool:
    """Whether the native kernel covers this export: int4, symmetric, an activation it implements,
    and (dense graph) hidden and intermediate sizes of whole blocks (QMoE's layout pads them)."""
    if bits != 4 or not symmetric or hidden_act not in ACTIVATIONS:
        return False
    return ACTIVATIONS[hidden_act] == "swiglu" or all(size % block == 0 for size in sizes)
