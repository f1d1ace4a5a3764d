"""The ZAYA router as a private-domain operator with a portable function body.

`ai.zaya::Router` is a model-local ONNX function: stock onnxruntime inlines its body, and a
native kernel registered for the same domain and name (custom_ops/) replaces it.

Inputs (N tokens, H hidden, R router hidden, E experts; weights are [in, out]):
    0 x              [N, H]      post-attention-normed hidden state
    1 prev_state     [N, R] or [1, R]  previous layer's router state (zeros for layer 0)
    2 down_w [H, R]  3 down_b [R]  4 state_scale [R] (zeros for layer 0: no EDA)
    5 norm_w [R]     6 fc1_w [R, R]  7 fc1_b [R]  8 fc2_w [R, R]  9 fc2_b [R]
    10 out_w [R, E+1]  11 balancing_bias [E+1]
Attribute: epsilon (the router RMSNorm's eps).
Outputs:
    0 state          [N, R]   z, handed to the next layer's router (EDA)
    1 expert_select  [N, E]   one-hot of the chosen expert (expert 0 for skipped tokens)
    2 expert_weight  [N, E]   the chosen class's unbiased probability at the chosen expert,
                              all zeros for skipped tokens

    z = x·down_w + down_b + prev_state·state_scale
    p = softmax( gelu(gelu(rmsnorm(z)·fc1_w + fc1_b)·fc2_w + fc2_b)·out_w )      # E+1 classes
    c = argmax(p + balancing_bias)            # class E is "skip": no expert computed
    w = p[c] if c < E else 0
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zaya_edge.artifact import ROUTER_OP, ZAYA_DOMAIN

INPUT_NAMES = (
    "x", "prev_state", "down_w", "down_b", "state_scale", "norm_w",
    "fc1_w", "fc1_b", "fc2_w", "fc2_b", "out_w", "balancing_bias",
)
OUTPUT_NAMES = ("state", "expert_select", "expert_weight")
OPSET = 21


def router_function() -> ir.Function:
    """Build the function body once per model."""
    ins = {n: ir.Value(name=n) for n in INPUT_NAMES}
    tape = ir.tape.Tape()

    def c(v, dtype):
        return tape.op("Constant", [], {"value": ir.tensor(np.asarray(v, dtype=dtype))})

    z = tape.op("Add", [tape.op("MatMul", [ins["x"], ins["down_w"]]), ins["down_b"]])
    z = tape.op("Add", [z, tape.op("Mul", [ins["prev_state"], ins["state_scale"]])])
    # RMSNorm in standard ops: onnxruntime crashes inlining its SimplifiedLayerNormalization
    # inside a function body (1.32), and the body must run on any runtime anyway.
    eps = tape.op("Constant", [], {"value_float": ir.RefAttr("value_float", "epsilon", ir.AttributeType.FLOAT)})
    mean_sq = tape.op("ReduceMean", [tape.op("Mul", [z, z]), c([-1], np.int64)], {"keepdims": 1})
    inv_rms = tape.op("Reciprocal", [tape.op("Sqrt", [tape.op("Add", [mean_sq, eps])])])
    n = tape.op("Mul", [tape.op("Mul", [z, inv_rms]), ins["norm_w"]])
    h = tape.op("Gelu", [tape.op("Add", [tape.op("MatMul", [n, ins["fc1_w"]]), ins["fc1_b"]])])
    h = tape.op("Gelu", [tape.op("Add", [tape.op("MatMul", [h, ins["fc2_w"]]), ins["fc2_b"]])])
    p = tape.op("Softmax", [tape.op("MatMul", [h, ins["out_w"]])], {"axis": -1})
    choice = tape.op("ArgMax", [tape.op("Add", [p, ins["balancing_bias"]])], {"axis": -1, "keepdims": 1})
    weight = tape.op("GatherElements", [p, choice], {"axis": 1})  # [N, 1]
    skip_class = tape.op("Sub", [tape.op("Shape", [ins["balancing_bias"]]), c([1], np.int64)])  # [1] = E
    skipped = tape.op("Equal", [choice, skip_class])
    weight = tape.op("Where", [skipped, c(0.0, np.float32), weight])
    expert = tape.op("Where", [skipped, c(0, np.int64), choice])
    depth = tape.op("Squeeze", [skip_class])
    select = tape.op("OneHot", [tape.op("Squeeze", [expert, c([1], np.int64)]), depth, c([0.0, 1.0], np.float32)], {"axis": -1})
    expert_weight = tape.op("Mul", [select, weight])
    outs = [z, select, expert_weight]
    for value, name in zip(outs, OUTPUT_NAMES):
        value.name = name
    graph = ir.Graph(
        inputs=list(ins.values()),
        outputs=outs,
        nodes=tape.nodes,
        opset_imports={"": OPSET},
        name=ROUTER_OP,
    )
    attr = ir.Attr("epsilon", ir.AttributeType.FLOAT, 1e-5)
    return ir.Function(ZAYA_DOMAIN, ROUTER_OP, graph=graph, attributes=[attr])
