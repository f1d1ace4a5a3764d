"""The ZAYA decoder graph, emitted straight from the checkpoint's weights.

One graph serves prefill and decode. Every row of a batch shares the cache's column
positions: `attention_mask` [B, past+S] marks real tokens, padding and holes are masked by an
attention bias, so new tokens of all rows land in the same columns (what HF does with left
padding). RoPE positions count each row's real tokens, not columns, so a row may sit in any
columns of the cache.

    input_ids ─ Gather(embed) ─ (+bias)·scale ─► h (fp32 residual stream)
    for each layer:   h ─► DecoderLayer ─► h      (router state flows layer to layer)
    h[:, -1:] ─ RMSNorm ─ Gemm(embedᵀ) ─► logits  (all positions with all_logits)

The builder never looks at the precision: every weight-bearing piece comes from its layers
object (layers.py). For int4/int8 (`ExportPlan.quant`) projections become MatMulNBits, experts
QMoE, and the tied table one quantized initializer read by GatherBlockQuantized and MatMulNBits
(quant_layers.py). Everything else still computes in fp32; a tensor stored in bf16/fp16 in the
checkpoint is kept in that dtype in the artifact (exact) and Cast to fp32, which onnxruntime
folds at load. The attention block is cca.py, the RoPE of every rope type rope.py, the experts
of a hidden_act other than SiLU experts.py.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zaya_edge import artifact as A

from .cca import CompressedConvAttention
from .checkpoint import Checkpoint
from .emitter import F32_MIN, INT64_MAX, Emitter
from .experts import FUSED
from .layers import FLOAT, MS, FloatLayers, Layers
from .plan import ExportPlan
from .quant_layers import QuantizedLayers
from .rope import RopeTables
from .attention_op import attention_function
from .router_op import router_function



def layers_for(plan: ExportPlan, e: Emitter, ckpt: Checkpoint) -> Layers:
    """The one place the precision decides how weights become nodes."""
    if plan.quant is None:
        return FloatLayers(e, ckpt)
    return QuantizedLayers(e, ckpt, plan.quant, plan.lm_head_bits, plan.fused_moe)


class DecoderGraphBuilder:
    """The decoder graph of one checkpoint and plan (`build()` emits it; weights stay lazy)."""

    def __init__(self, ckpt: Checkpoint, plan: ExportPlan):
        self.ckpt, self.dims, self.plan = ckpt, ckpt.dims, plan
        self.e = Emitter()
        self.layers = layers_for(plan, self.e, ckpt)

    # ---- the graph -------------------------------------------------------------------------
    def build(self) -> ir.Model:
        d, e = self.dims, self.e
        inputs_spec, outputs_spec = A.io_spec(d, self.plan.all_logits, self.plan.kv_dtype)
        graph_inputs = {name: ir.val(name, _dtype(dt), shape) for name, dt, shape in inputs_spec}
        ids, mask = graph_inputs[A.INPUT_IDS], graph_inputs[A.ATTENTION_MASK]

        ctx = self._attention_context(ids, mask)
        h = self._embed(ids)
        router_state = e.const(np.zeros((1, d.router_hidden_size), np.float32))
        presents: dict[str, ir.Value] = {}
        for i in range(d.num_layers):
            past = {k: graph_inputs[A.PAST_NAMES[k] % i] for k in A.STATE_KINDS}
            h, router_state, present = self._layer(i, h, router_state, past, ctx)
            for k, v in present.items():
                presents[A.PRESENT_NAMES[k] % i] = e.rename(v, A.PRESENT_NAMES[k] % i)
        logits = e.rename(self._head(h), A.LOGITS)

        outputs = []
        for name, dt, shape in outputs_spec:
            v = logits if name == A.LOGITS else presents[name]
            v.dtype, v.shape = _dtype(dt), ir.Shape(shape)
            outputs.append(v)
        graph = ir.Graph(
            inputs=list(graph_inputs.values()),
            outputs=outputs,
            nodes=e.tape.nodes,
            initializers=e.tape.initializers,
            opset_imports={"": 21, MS: 1, A.ZAYA_DOMAIN: 1},
            name="zaya_decoder",
        )
        return ir.Model(graph, ir_version=10, producer_name="zaya-edge", functions=self._functions())

    def _functions(self) -> list:
        """The ai.zaya functions the graph calls (CachedAttention only where the head size suits it)."""
        attention = [] if self.dims.head_dim % 8 else [attention_function(self.plan.kv_dtype)]
        return [router_function(), *attention, *self.layers.functions()]

    def _attention_context(self, ids, mask) -> dict:
        """Per-call values shared by all layers: pad masks, RoPE positions and caches.

            mask [B,T] ─► token_mask [B,S,1] (zeroes padding before the CCA projections)
                      ─► attention_mask itself (CachedAttention masks padding keys from it)
        """
        e, i64 = self.e, self.e.i64
        p = "/model/attn_mask"
        seq = e.op("Gather", f"{p}/seq", [e.op("Shape", f"{p}/ids_shape", [ids]), i64(1)], {"axis": 0})
        seq_1d = e.op("Unsqueeze", f"{p}/seq_1d", [seq, i64([0])])
        neg_seq = e.op("Neg", f"{p}/neg_seq", [seq_1d])
        new_cols = e.op("Slice", f"{p}/new_cols", [mask, neg_seq, i64([INT64_MAX]), i64([1])])
        maskf = e.op("Cast", f"{p}/new_cols_f", [new_cols], {"to": FLOAT})
        token_mask = e.op("Unsqueeze", f"{p}/token_mask", [maskf, i64([2])])
        positions = self._positions(p, mask, neg_seq)
        rope = RopeTables(e, self.dims, self.plan.context_length)
        ctx = {
            "attention_mask": mask, "token_mask": token_mask, "position_ids": positions, "kv_dtype": self.plan.kv_dtype,
            "rope": {lt: rope(lt, positions) for lt in sorted(set(self.dims.layer_types))},
        }
        return {**ctx, **self._optional_context(p, mask, seq, seq_1d, neg_seq)}

    def _optional_context(self, p, mask, seq, seq_1d, neg_seq) -> dict:
        """Only what some configs need (so the others' graphs stay small):

            plain attention (head_dim % 8): total T, the new tokens' first column T−S,
                                            key bias [B,1,S,T] (float32 min on padding keys)
            attention_bias: has_past [B,1], whether a row has a real token before this call
        """
        e, i64, out = self.e, self.e.i64, {}
        if self.dims.head_dim % 8:
            mask_shape = e.op("Shape", f"{p}/mask_shape", [mask])
            batch_1d = e.op("Gather", f"{p}/batch_1d", [mask_shape, i64([0])], {"axis": 0})
            total = e.op("Gather", f"{p}/total", [mask_shape, i64(1)], {"axis": 0})
            total_1d = e.op("Unsqueeze", f"{p}/total_1d", [total, i64([0])])
            is_pad = e.op("Equal", f"{p}/is_pad", [mask, i64(0)])
            key_bias = e.op("Where", f"{p}/key_bias", [is_pad, e.const(np.float32(F32_MIN)), e.const(np.float32(0))])
            key_bias = e.op("Unsqueeze", f"{p}/key_bias_4d", [key_bias, i64([1, 2])])
            bias_shape = e.op("Concat", f"{p}/bias_shape", [batch_1d, i64([1]), seq_1d, total_1d], {"axis": 0})
            start = e.op("Sub", f"{p}/start", [total, seq])
            out.update(total_i64=total, total_1d=total_1d, start_i64=start,
                       start_1d=e.op("Unsqueeze", f"{p}/start_1d", [start, i64([0])]),
                       attn_bias=e.op("Expand", f"{p}/attn_bias", [key_bias, bias_shape]))
        if self.dims.attention_bias:
            past_cols = e.op("Slice", f"{p}/past_cols", [mask, i64([0]), neg_seq, i64([1])])
            count = e.op("ReduceSum", f"{p}/past_count", [past_cols, i64([1])], {"keepdims": 1})
            out["has_past"] = e.op("Greater", f"{p}/has_past", [count, i64(0)])
        return out

    def _positions(self, p, mask, neg_seq):
        """RoPE positions count each row's real tokens (cumsum of the mask), not columns, so the
        runtime may place a sequence in any columns of the cache (holes, refilled slots)."""
        e, i64 = self.e, self.e.i64
        positions = e.op("CumSum", f"{p}/token_count", [mask, i64(1)])
        positions = e.op("Sub", f"{p}/positions_all", [positions, i64(1)])
        positions = e.op("Max", f"{p}/positions_clip", [positions, i64(0)])
        return e.op("Slice", f"{p}/position_ids", [positions, neg_seq, i64([INT64_MAX]), i64([1])])

    def _embed(self, ids):
        e, p, t = self.e, "/model/embed", self.layers.tensor
        self.embed_table = self.layers.table("model.embed_tokens.weight")
        x = self.layers.embed(p, self.embed_table, ids)
        x = e.op("Add", f"{p}/input_bias", [x, t("model.input_hidden_states_bias")])
        return e.op("Mul", f"{p}/input_scale", [x, t("model.input_hidden_states_scale")])

    def _rmsnorm(self, path, x, weight_name):
        return self.e.op(
            "SimplifiedLayerNormalization", path, [x, self.layers.tensor(weight_name)],
            {"axis": -1, "epsilon": self.dims.rms_norm_eps},
        )

    def _residual_scale(self, path, x, residual, prefix):
        """(x + hidden_bias)·hidden_scale + (residual + res_bias)·res_scale, fp32."""
        e, t = self.e, self.layers.tensor
        a = e.op("Mul", f"{path}/hidden_scale", [e.op("Add", f"{path}/hidden_bias", [x, t(prefix + "hidden_states_bias")]), t(prefix + "hidden_states_scale")])
        b = e.op("Mul", f"{path}/res_scale", [e.op("Add", f"{path}/res_bias", [residual, t(prefix + "residual_bias")]), t(prefix + "residual_scale")])
        return e.op("Add", f"{path}/sum", [a, b])

    def _layer(self, i, h, router_state, past, ctx):
        """One decoder layer:

            h ─ RMSNorm ─ CCA attention ─ residual scale ─► r
            r ─ RMSNorm ─ Router ─ MoE ─ residual scale ─► h'
        """
        pre = f"model.layers.{i}."
        path = f"/model/layers.{i}"
        x = self._rmsnorm(f"{path}/input_layernorm", h, pre + "input_layernorm.weight")
        attn, present = CompressedConvAttention(self.e, self.layers, self.dims, i)(x, past, ctx)
        r = self._residual_scale(f"{path}/post_attention_residual", attn, h, pre + "post_attention_residual_scale.")
        x2 = self._rmsnorm(f"{path}/post_attention_layernorm", r, pre + "post_attention_layernorm.weight")
        m, router_state = self._moe(i, x2, router_state)
        h = self._residual_scale(f"{path}/post_mlp_residual", m, r, pre + "post_mlp_residual_scale.")
        return h, router_state, present

    def _moe(self, i, x2, router_state):
        """Router (ai.zaya) then the experts; skipped tokens get weight 0.

            x2 [B,S,H] ─ flatten ─ Router ─┬─ state ─► next layer
                                           ├─ select (one-hot) ─ MoE ─ ·weight ─ reshape ─► m
                                           └─ weight
        fp32 MoE multiplies by the router weight after the experts; QMoE takes it as an input.
        A hidden_act other than SiLU runs every expert densely instead (experts.py).
        """
        e, d = self.e, self.dims
        path = f"/model/layers.{i}/moe"
        flat = e.op("Reshape", f"{path}/flatten", [x2, e.i64([-1, d.hidden_size])])
        state, select, weight = e.op(
            A.ROUTER_OP, f"{path}/router", self._router_inputs(i, flat, router_state), {"epsilon": d.rms_norm_eps},
            domain=A.ZAYA_DOMAIN, outputs=3,
        )
        prefix = f"model.layers.{i}.mlp.experts."
        if d.hidden_act in FUSED:
            m = self.layers.experts(path, prefix, flat, select, weight)
        else:
            m = self.layers.dense_experts(path, prefix, flat, select, weight, d)
        m = e.op("Reshape", f"{path}/unflatten", [m, e.op("Shape", f"{path}/x_shape", [x2])])
        return m, state

    def _router_inputs(self, i, flat, router_state) -> list:
        """The Router's inputs in router_op.py's order; weights transposed to [in, out]."""
        e, d, t = self.e, self.dims, self.layers.tensor
        pre = f"model.layers.{i}.mlp.gate."
        R, E = d.router_hidden_size, d.num_experts
        state_scale = e.const(np.zeros(R, np.float32)) if i == 0 else t(pre + "router_states_scale")
        return [
            flat, router_state,
            t(pre + "down_proj.weight", transform=np.transpose, shape=(d.hidden_size, R)),
            t(pre + "down_proj.bias"), state_scale,
            t(pre + "router_mlp.norm.weight"),
            t(pre + "router_mlp.fc1.weight", transform=np.transpose, shape=(R, R)),
            t(pre + "router_mlp.fc1.bias"),
            t(pre + "router_mlp.fc2.weight", transform=np.transpose, shape=(R, R)),
            t(pre + "router_mlp.fc2.bias"),
            t(pre + "router_mlp.out_proj.weight", transform=np.transpose, shape=(R, E + 1)),
            self._balancing_biases(pre + "balancing_biases"),
        ]

    def _balancing_biases(self, name: str) -> ir.Value:
        """fp32 [E+1], the skip class's bias as transformers' loader (and its init) sets it."""
        ckpt, E = self.ckpt, self.dims.num_experts

        def produce():
            b = ckpt.read(name).copy() if ckpt.has(name) else np.zeros(E + 1, np.float32)
            if ckpt.resets_skip_bias or not ckpt.has(name):
                b[-1] = -1.0
            return b.astype(np.float32)

        return self.e.weight(name, FLOAT, (E + 1,), produce)

    def _head(self, h):
        """Final RMSNorm and the (tied) lm_head, on the last position unless all_logits."""
        e, d, i64 = self.e, self.dims, self.e.i64
        path = "/model/lm_head"
        if not self.plan.all_logits:
            h = e.op("Slice", f"{path}/last_position", [h, i64([-1]), i64([INT64_MAX]), i64([1])])
        n = self._rmsnorm("/model/norm", h, "model.norm.weight")
        flat = e.op("Reshape", f"{path}/flatten", [n, i64([-1, d.hidden_size])])
        bias = self.layers.tensor("lm_head.bias") if d.lm_head_bias else None
        table = self.embed_table if d.tie_word_embeddings else self.layers.table("lm_head.weight")
        logits = self.layers.head(path, table, flat, bias)
        batch_seq = e.op("Slice", f"{path}/batch_seq", [e.op("Shape", f"{path}/h_shape", [n]), i64([0]), i64([2]), i64([0])])
        shape = e.op("Concat", f"{path}/logits_shape", [batch_seq, i64([d.vocab_size])], {"axis": 0})
        return e.op("Reshape", f"{path}/logits", [logits, shape])


def _dtype(name: str) -> ir.DataType:
    return {"float32": ir.DataType.FLOAT, "float16": ir.DataType.FLOAT16, "int64": ir.DataType.INT64}[name]
