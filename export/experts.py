"""Experts whose activation is not SiLU: all experts on every token, weighted by the router.

onnxruntime's MoE and QMoE kernels gate with SiLU only (swiglu; a gated fc3 "is not implemented
for CPU MoE"), while transformers' ZAYA takes any ACT2FN `hidden_act` (its model tester uses
gelu). For the others the experts become two matmuls over all experts at once. It is exact: the
router's weight is zero on every expert but the chosen one (on all of them for a skipped token),
at E times the expert compute of the fused kernels:

    flat [N,H] ─ ·[gate|up of every expert]ᵀ ─ [N,E,2,I] ─ act(gate)·up ─ ·weight [N,E,1]
               ─ [N, E·I] ─ ·[down of every expert]ᵀ ─► [N,H]

(transformers weights each expert's output; weighting its input instead is the same product.)
"""

from __future__ import annotations

import numpy as np

from .emitter import Emitter

FUSED = ("silu", "swish")  # what the MoE/QMoE kernels compute themselves
LEARNED = ("prelu", "xielu")  # activations with parameters of their own: not exported
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_accurate", "gelu_python_tanh")


def activation(e: Emitter, path: str, x, name: str):
    """transformers.activations.ACT2FN[name](x) in ONNX ops (opset 21)."""
    f32 = lambda v: e.const(np.float32(v))  # noqa: E731
    if name in ("gelu", "gelu_python", "gelu_10") or name in TANH_GELU:
        y = e.op("Gelu", f"{path}/gelu", [x], {"approximate": "tanh" if name in TANH_GELU else "none"})
        return e.op("Clip", f"{path}/clip", [y, f32(-10), f32(10)]) if name == "gelu_10" else y
    if name == "quick_gelu":
        return e.op("Mul", f"{path}/quick_gelu", [x, e.op("Sigmoid", f"{path}/sigmoid", [e.op("Mul", f"{path}/x1702", [x, f32(1.702)])])])
    if name == "relu2":
        r = e.op("Relu", f"{path}/relu", [x])
        return e.op("Mul", f"{path}/square", [r, r])
    if name == "relu6":
        return e.op("Clip", f"{path}/relu6", [x, f32(0), f32(6)])
    if name == "laplace":
        z = e.op("Div", f"{path}/scaled", [e.op("Sub", f"{path}/shifted", [x, f32(0.707107)]), f32(0.282095 * 2.0 ** 0.5)])
        return e.op("Mul", f"{path}/laplace", [e.op("Add", f"{path}/one_plus", [e.op("Erf", f"{path}/erf", [z]), f32(1.0)]), f32(0.5)])
    if name == "sqrtsoftplus":
        return e.op("Sqrt", f"{path}/sqrt", [e.op("Softplus", f"{path}/softplus", [x])])
    if name == "linear":
        return x
    ops = {"relu": ("Relu", {}), "leaky_relu": ("LeakyRelu", {"alpha": 0.01}), "sigmoid": ("Sigmoid", {}),
           "tanh": ("Tanh", {}), "mish": ("Mish", {}), "hardswish": ("HardSwish", {})}
    op, attrs = ops[name]
    return e.op(op, f"{path}/{name}", [x], attrs)


def dense_experts(layers, path: str, prefix: str, flat, weight, dims):
    """flat [N,H], router weight [N,E] ─► Σ_e weight[:, e] · expert_e(flat) with `dims.hidden_act`."""
    e, ckpt = layers.e, layers.ckpt
    E, H, I = dims.num_experts, dims.hidden_size, dims.moe_intermediate_size
    gate_up = layers.matmul(f"{path}/experts_gate_up", flat, prefix + "gate_up_proj.all", E * 2 * I, H,
                            lambda: ckpt.read(prefix + "gate_up_proj").reshape(E * 2 * I, H))
    gate_up = e.op("Reshape", f"{path}/experts_split", [gate_up, e.i64([0, E, 2, I])])
    gate, up = e.op("Split", f"{path}/gate_up_split", [gate_up, e.i64([1, 1])], {"axis": 2}, outputs=2)
    h = e.op("Mul", f"{path}/gated", [activation(e, f"{path}/act", gate, dims.hidden_act), up])  # [N,E,1,I]
    h = e.op("Mul", f"{path}/routed", [h, e.op("Unsqueeze", f"{path}/weight_4d", [weight, e.i64([2, 3])])])
    h = e.op("Reshape", f"{path}/experts_flat", [h, e.i64([0, E * I])])
    return layers.matmul(f"{path}/experts_down", h, prefix + "down_proj.all", H, E * I,
                         lambda: ckpt.read(prefix + "down_proj").transpose(1, 0, 2).reshape(H, E * I))
