"""The ZAYA decoder graph, emitted straight from the checkpoint's weights.

One graph serves prefill and decode. Every row of a batch shares the cache's column
positions: `attention_mask` [B, past+S] marks real tokens, padding and holes are masked by an
attention bias, so new tokens of all rows land in the same columns (what HF does with left
padding). RoPE positions are column positions — RoPE is relative, so a per-row offset from
left padding changes nothing.

    input_ids ─ Gather(embed) ─ (+bias)·scale ─► h (fp32 residual stream)
    for each layer:   h ─► DecoderLayer ─► h      (router state flows layer to layer)
    h[:, -1:] ─ RMSNorm ─ Gemm(embedᵀ) ─► logits  (all positions with all_logits)

int4/int8 (`GraphOptions.quant`): projections become MatMulNBits, experts QMoE, and the tied
table one quantized initializer read by GatherBlockQuantized and MatMulNBits (quant_layers.py).
Everything else still computes in fp32; a tensor stored in bf16/fp16 in the checkpoint is kept
in that dtype in the artifact (exact) and Cast to fp32, which onnxruntime folds at load.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from zaya_edge import artifact as A
from zaya_edge.config import ZayaDims

from .checkpoint import Checkpoint
from .emitter import INT64_MAX, Emitter
from .quant import QuantSpec
from .quant_layers import QuantizedLayers
from .router_op import router_function

FLOAT = ir.DataType.FLOAT
MS = "com.microsoft"
F32_MIN = float(np.finfo(np.float32).min)
F32_EPS = float(np.finfo(np.float32).eps)
_NARROW = {"BF16": ir.DataType.BFLOAT16, "F16": ir.DataType.FLOAT16}


@dataclasses.dataclass(frozen=True)
class GraphOptions:
    precision: str = "fp32"
    all_logits: bool = False
    context_length: int | None = None  # rows of the RoPE cache; default max_position_embeddings
    quant: QuantSpec | None = None  # None: fp32 weights everywhere
    lm_head_bits: int | None = None  # bits of the (tied) embedding/lm_head table; default quant.bits


def rope_cache(dims: ZayaDims, layer_type: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [length, rotary_dim/2] as HF computes them (fp32 inverse frequencies)."""
    rot = dims.rotary_dim(layer_type)
    base = np.float32(dims.rope_theta[layer_type])
    inv_freq = (np.float32(1.0) / base ** (np.arange(0, rot, 2, dtype=np.float32) / np.float32(rot))).astype(np.float32)
    freqs = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)


class DecoderGraphBuilder:
    def __init__(self, ckpt: Checkpoint, options: GraphOptions):
        self.ckpt = ckpt
        self.dims = ckpt.dims
        self.opt = options
        self.e = Emitter()
        self.context_length = options.context_length or self.dims.max_position_embeddings
        self.q = None
        if options.quant is not None:
            self.q = QuantizedLayers(self.e, ckpt, options.quant, options.lm_head_bits or options.quant.bits)

    # ---- weights ----------------------------------------------------------------------------
    def _tensor(self, name: str, transform=None, shape=None):
        """A lazy fp32 value from one checkpoint tensor (optionally transformed).

        Quantized exports store a bf16/fp16 source tensor in its own dtype (exact) behind a Cast.
        """
        src_shape = tuple(self.ckpt.shape(name))
        ckpt = self.ckpt
        store = _NARROW.get(ckpt.dtype(name), FLOAT) if self.q is not None else FLOAT

        def produce(name=name, transform=transform):
            arr = ckpt.read(name)
            arr = np.ascontiguousarray(transform(arr) if transform else arr, dtype=np.float32)
            return _narrow(arr, store, name)

        value = self.e.weight(name, store, shape or src_shape, produce)
        if store != FLOAT:
            value = self.e.op("Cast", f"/model/weights/{name}", [value], {"to": FLOAT})
        return value

    def _linear_weight(self, out_name: str, names: list[str]):
        """[in, out] fp32 weight for MatMul, the rows of several nn.Linear weights fused."""
        ckpt = self.ckpt
        rows = sum(ckpt.shape(n)[0] for n in names)
        cols = ckpt.shape(names[0])[1]

        def produce():
            return np.concatenate([ckpt.read(n) for n in names], axis=0).T

        return self.e.weight(out_name, FLOAT, (cols, rows), produce)

    def _linear(self, path: str, x, name: str, sources: list[str]):
        """x · Wᵀ with W the rows of `sources` fused: MatMul (fp32) or MatMulNBits."""
        if self.q is not None:
            return self.q.linear(path, x, name, sources)
        return self.e.op("MatMul", path, [x, self._linear_weight(name + ".weight_t", sources)])

    # ---- the graph -------------------------------------------------------------------------
    def build(self) -> ir.Model:
        d, e = self.dims, self.e
        inputs_spec, outputs_spec = A.io_spec(d, self.opt.all_logits)
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
        return ir.Model(graph, ir_version=10, producer_name="zaya-edge", functions=[router_function()])

    def _attention_context(self, ids, mask) -> dict:
        """Per-call values shared by all layers: lengths, pad masks, RoPE caches.

            mask [B,T] ─► seqlens_k = T-1 per row (shared columns), total = T
                      ─► token_mask [B,S,1] (zeroes padding before the CCA projections)
                      ─► key bias   [B,1,S,T] (float32 min on padding keys)
        """
        e, d = self.e, self.dims
        p = "/model/attn_mask"
        i64 = lambda v: e.const(np.asarray(v, np.int64))
        mask_shape = e.op("Shape", f"{p}/mask_shape", [mask])
        batch = e.op("Gather", f"{p}/batch", [mask_shape, i64(0)], {"axis": 0})
        total = e.op("Gather", f"{p}/total", [mask_shape, i64(1)], {"axis": 0})
        seq = e.op("Gather", f"{p}/seq", [e.op("Shape", f"{p}/ids_shape", [ids]), i64(1)], {"axis": 0})
        total_i32 = e.op("Cast", f"{p}/total_i32", [total], {"to": ir.DataType.INT32})
        seqlens = e.op("Sub", f"{p}/seqlens_k", [total_i32, e.const(np.int32(1))])
        batch_1d = e.op("Unsqueeze", f"{p}/batch_1d", [batch, i64([0])])
        seqlens = e.op("Expand", f"{p}/seqlens_k_rows", [seqlens, batch_1d])
        seq_1d = e.op("Unsqueeze", f"{p}/seq_1d", [seq, i64([0])])
        neg_seq = e.op("Neg", f"{p}/neg_seq", [seq_1d])
        new_cols = e.op("Slice", f"{p}/new_cols", [mask, neg_seq, i64([INT64_MAX]), i64([1])])
        maskf = e.op("Cast", f"{p}/new_cols_f", [new_cols], {"to": FLOAT})
        token_mask = e.op("Unsqueeze", f"{p}/token_mask", [maskf, i64([2])])
        is_pad = e.op("Equal", f"{p}/is_pad", [mask, i64(0)])
        key_bias = e.op("Where", f"{p}/key_bias", [is_pad, e.const(np.float32(F32_MIN)), e.const(np.float32(0))])
        key_bias = e.op("Unsqueeze", f"{p}/key_bias_4d", [key_bias, i64([1, 2])])
        total_1d = e.op("Unsqueeze", f"{p}/total_1d", [total, i64([0])])
        bias_shape = e.op("Concat", f"{p}/bias_shape", [batch_1d, i64([1]), seq_1d, total_1d], {"axis": 0})
        attn_bias = e.op("Expand", f"{p}/attn_bias", [key_bias, bias_shape])
        # RoPE positions count each row's real tokens (cumsum of the mask), not columns, so the
        # runtime may place a sequence in any columns of the cache (holes, refilled slots).
        positions = e.op("CumSum", f"{p}/token_count", [mask, i64(1)])
        positions = e.op("Sub", f"{p}/positions_all", [positions, i64(1)])
        positions = e.op("Max", f"{p}/positions_clip", [positions, i64(0)])
        positions = e.op("Slice", f"{p}/position_ids", [positions, neg_seq, i64([INT64_MAX]), i64([1])])
        rope = {}
        for lt in sorted(set(d.layer_types)):
            cos, sin = rope_cache(d, lt, self.context_length)
            rope[lt] = (e.eager_weight(f"/model/rope/{lt}/cos_cache", cos), e.eager_weight(f"/model/rope/{lt}/sin_cache", sin))
        return {
            "seqlens_k": seqlens, "total": total_i32, "token_mask": token_mask,
            "attn_bias": attn_bias, "rope": rope, "position_ids": positions,
        }

    def _embed(self, ids):
        e, p = self.e, "/model/embed"
        if self.q is not None:
            table = self.q.table("model.embed_tokens.weight")
            x = self.q.embed(p, table, ids)
        else:
            table = self._tensor("model.embed_tokens.weight")
            x = e.op("Gather", p, [table, ids], {"axis": 0})
        self.embed_table = table
        x = e.op("Add", f"{p}/input_bias", [x, self._tensor("model.input_hidden_states_bias")])
        return e.op("Mul", f"{p}/input_scale", [x, self._tensor("model.input_hidden_states_scale")])

    def _rmsnorm(self, path, x, weight_name):
        return self.e.op(
            "SimplifiedLayerNormalization", path, [x, self._tensor(weight_name)],
            {"axis": -1, "epsilon": self.dims.rms_norm_eps},
        )

    def _residual_scale(self, path, x, residual, prefix):
        """(x + hidden_bias)·hidden_scale + (residual + res_bias)·res_scale, fp32."""
        e, t = self.e, self._tensor
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
        attn, present = self._attention(i, x, past, ctx)
        r = self._residual_scale(f"{path}/post_attention_residual", attn, h, pre + "post_attention_residual_scale.")
        x2 = self._rmsnorm(f"{path}/post_attention_layernorm", r, pre + "post_attention_layernorm.weight")
        m, router_state = self._moe(i, x2, router_state)
        h = self._residual_scale(f"{path}/post_mlp_residual", m, r, pre + "post_mlp_residual_scale.")
        return h, router_state, present

    def _attention(self, i, x, past, ctx):
        """Compressed Convolutional Attention.

            x·mask ─ MatMul[q|k|v_cur|v_del] ─┬─ qk ─ ‖past_conv ─ Conv(depthwise∘grouped, folded) ──┐
                                              ├─ q,k residual (q+k)/2, group mean ───────────── (+) ─ q,k
                                              ├─ v_cur ─────────────┐
                                              └─ v_del ─ shift by 1 ─┴─ concat ─ v
            q,k ─ L2 norm·√D (k·temp) ─ GroupQueryAttention(RoPE, bias) ─ o_proj
        """
        e, d = self.e, self.dims
        pre = f"model.layers.{i}.self_attn."
        path = f"/model/layers.{i}/attn"
        i64 = lambda v: e.const(np.asarray(v, np.int64))
        D, Hq, Hkv, C, Vh = d.head_dim, d.num_heads, d.num_kv_heads, d.conv_channels, d.value_half
        g = Hq // Hkv
        qkv_names = [pre + f"qkv_proj.{n}.weight" for n in ("q_proj", "k_proj", "v_proj_current", "v_proj_delayed")]

        x = e.op("Mul", f"{path}/pad_zero", [x, ctx["token_mask"]])
        qkv = self._linear(f"{path}/qkv_proj", x, f"{pre}qkv_proj.qkv", qkv_names)
        qk, v_cur, v_del = e.op("Split", f"{path}/qkv_split", [qkv, i64([C, Vh, Vh])], {"axis": -1}, outputs=3)
        q_lin, k_lin = e.op("Split", f"{path}/qk_split", [qk, i64([Hq * D, Hkv * D])], {"axis": -1}, outputs=2)

        # residual paths: q_res[h] = (q[h] + k[h//g]) / 2 ; k_res[j] = mean of its group's q_res
        q5 = e.op("Reshape", f"{path}/q_groups", [q_lin, i64([0, 0, Hkv, g, D])])
        k5 = e.op("Reshape", f"{path}/k_groups", [k_lin, i64([0, 0, Hkv, 1, D])])
        q_res = e.op("Mul", f"{path}/q_res", [e.op("Add", f"{path}/q_plus_k", [q5, k5]), e.const(np.float32(0.5))])
        k_res = e.op("ReduceMean", f"{path}/k_res", [q_res, i64([3])], {"keepdims": 0})
        q_res = e.op("Reshape", f"{path}/q_res_flat", [q_res, i64([0, 0, Hq * D])])
        k_res = e.op("Reshape", f"{path}/k_res_flat", [k_res, i64([0, 0, Hkv * D])])

        # causal time convolution over (past conv state ‖ new tokens)
        qk_t = e.op("Transpose", f"{path}/qk_channels_first", [qk], {"perm": [0, 2, 1]})
        window = e.op("Concat", f"{path}/conv_window", [past["conv"], qk_t], {"axis": 2})
        present_conv = e.op("Slice", f"{path}/present_conv", [window, i64([-d.conv_state_len]), i64([INT64_MAX]), i64([2])])
        weight, bias = self._composed_conv(f"{path}/conv_composed", pre + "qkv_proj.")
        gw = e.op("Conv", f"{path}/conv", [window, weight, bias], {"group": Hq + Hkv, "kernel_shape": [d.conv_state_len + 1]})
        conv = e.op("Transpose", f"{path}/conv_tokens_first", [gw], {"perm": [0, 2, 1]})
        conv_q, conv_k = e.op("Split", f"{path}/conv_split", [conv, i64([Hq * D, Hkv * D])], {"axis": -1}, outputs=2)
        q = e.op("Add", f"{path}/q", [conv_q, q_res])
        k = e.op("Add", f"{path}/k", [conv_k, k_res])

        # values: head 0 = current token, head 1.. = the previous token's delayed projection
        prev = e.op("Unsqueeze", f"{path}/v_prev", [past["recurrent"], i64([1])])
        v_del_head = e.op("Slice", f"{path}/v_del_shift", [v_del, i64([0]), i64([-1]), i64([1])])
        v_delayed = e.op("Concat", f"{path}/v_delayed", [prev, v_del_head], {"axis": 1})
        present_rec = e.op("Gather", f"{path}/present_recurrent", [v_del, i64(-1)], {"axis": 1})
        v = e.op("Concat", f"{path}/v", [v_cur, v_delayed], {"axis": -1})

        # QK norm: x·√D/‖x‖ == x/rms(x); eps² / D reproduces HF's clamp at the dtype's epsilon
        qk_eps = F32_EPS * F32_EPS / D
        ones = e.const(np.ones(D, np.float32))
        q = e.op("Reshape", f"{path}/q_heads", [q, i64([0, 0, Hq, D])])
        q = e.op("SimplifiedLayerNormalization", f"{path}/q_norm", [q, ones], {"axis": -1, "epsilon": qk_eps})
        q = e.op("Reshape", f"{path}/q_flat", [q, i64([0, 0, Hq * D])])
        k = e.op("Reshape", f"{path}/k_heads", [k, i64([0, 0, Hkv, D])])
        k = e.op("SimplifiedLayerNormalization", f"{path}/k_norm", [k, ones], {"axis": -1, "epsilon": qk_eps})
        temp = self._tensor(pre + "qk_norm.temp", transform=lambda t: t.reshape(-1, 1), shape=(Hkv, 1))
        k = e.op("Mul", f"{path}/k_temp", [k, temp])
        k = e.op("Reshape", f"{path}/k_flat", [k, i64([0, 0, Hkv * D])])

        # RoPE by token position (not by column) before attention; GQA's fused rotary would
        # use columns for a first prompt, which breaks left-padded rows on the next step.
        layer_type = d.layer_types[i]
        cos, sin = ctx["rope"][layer_type]
        rot = d.rotary_dim(layer_type)
        q = e.op("RotaryEmbedding", f"{path}/q_rotary", [q, ctx["position_ids"], cos, sin],
                 {"num_heads": Hq, "rotary_embedding_dim": rot, "interleaved": 0}, domain=MS)
        k = e.op("RotaryEmbedding", f"{path}/k_rotary", [k, ctx["position_ids"], cos, sin],
                 {"num_heads": Hkv, "rotary_embedding_dim": rot, "interleaved": 0}, domain=MS)
        # GQA's local_window_size counts the keys a query sees, itself included (measured
        # against HF's sliding layers: prompt, decode and left padding)
        window_size = d.sliding_window if layer_type == "hybrid_sliding" else -1
        attn, present_k, present_v = e.op(
            "GroupQueryAttention", f"{path}/gqa",
            [q, k, v, past["key"], past["value"], ctx["seqlens_k"], ctx["total"], None, None, None, ctx["attn_bias"]],
            {"num_heads": Hq, "kv_num_heads": Hkv, "scale": float(D ** -0.5), "do_rotary": 0,
             "local_window_size": window_size},
            domain=MS, outputs=3,
        )
        o = self._linear(f"{path}/o_proj", attn, pre + "o_proj", [pre + "o_proj.weight"])
        return o, {"key": present_k, "value": present_v, "conv": present_conv, "recurrent": present_rec}

    def _composed_conv(self, path, pre):
        """One grouped convolution equal to CCA's depthwise-then-grouped pair.

        With d[t] = Σ_k a_k⊙x[t-t0+1+k] + b_d and o[t] = Σ_j G_j·d[t-t1+1+j] + b_g, the
        composition has taps m = j + k:  W_m = Σ_{j+k=m} G_j·diag(a_k),  b = Σ_j G_j·b_d + b_g.
        It is emitted as ops on the stored weights only, so onnxruntime folds it at load:
        the artifact keeps the checkpoint's weights, a decode step runs one Conv instead of
        two (half the time at one token).

            a [C,1,t0] ─ per-group expand ─┐
            G [C,D,t1] ────────────────────┴─ Σ_{j+k=m} G_j·a_k ─ Concat(m) ─► W [C,D,t0+t1-1]
        """
        e, d = self.e, self.dims
        i64 = lambda v: e.const(np.asarray(v, np.int64))
        D, C, t0, t1 = d.head_dim, d.conv_channels, d.cca_time0, d.cca_time1
        G = d.num_heads + d.num_kv_heads
        a = self._tensor(pre + "conv_qk_depthwise.weight")  # [C, 1, t0]
        b_d = self._tensor(pre + "conv_qk_depthwise.bias")  # [C]
        g_w = self._tensor(pre + "conv_qk_grouped.weight")  # [C, D, t1]
        b_g = self._tensor(pre + "conv_qk_grouped.bias")  # [C]
        # a_exp[o, i, k] = a[group(o)·D + i, 0, k]: each output row sees its group's inputs
        a_exp = e.op("Reshape", f"{path}/a_groups", [a, i64([G, 1, D, t0])])
        a_exp = e.op("Expand", f"{path}/a_rows", [a_exp, i64([G, D, D, t0])])
        a_exp = e.op("Reshape", f"{path}/a_exp", [a_exp, i64([C, D, t0])])
        taps = []
        for m in range(t0 + t1 - 1):
            terms = []
            for j in range(t1):
                k = m - j
                if 0 <= k < t0:
                    g_j = e.op("Slice", f"{path}/g{j}_for_{m}", [g_w, i64([j]), i64([j + 1]), i64([2])])
                    a_k = e.op("Slice", f"{path}/a{k}_for_{m}", [a_exp, i64([k]), i64([k + 1]), i64([2])])
                    terms.append(e.op("Mul", f"{path}/g{j}_a{k}", [g_j, a_k]))
            tap = terms[0]
            for n, t in enumerate(terms[1:]):
                tap = e.op("Add", f"{path}/tap{m}_sum{n}", [tap, t])
            taps.append(tap)
        weight = e.op("Concat", f"{path}/weight", taps, {"axis": 2})
        bd_exp = e.op("Reshape", f"{path}/bd_groups", [b_d, i64([G, 1, D, 1])])
        bd_exp = e.op("Expand", f"{path}/bd_rows", [bd_exp, i64([G, D, D, 1])])
        bd_exp = e.op("Reshape", f"{path}/bd_exp", [bd_exp, i64([C, D, 1])])
        through = e.op("ReduceSum", f"{path}/bias_through", [e.op("Mul", f"{path}/g_bd", [g_w, bd_exp]), i64([1, 2])], {"keepdims": 0})
        bias = e.op("Add", f"{path}/bias", [through, b_g])
        return weight, bias

    def _moe(self, i, x2, router_state):
        """Router (ai.zaya) then the experts; skipped tokens get weight 0.

            x2 [B,S,H] ─ flatten ─ Router ─┬─ state ─► next layer
                                           ├─ select (one-hot) ─ MoE ─ ·weight ─ reshape ─► m
                                           └─ weight
        """
        e, d = self.e, self.dims
        pre = f"model.layers.{i}.mlp."
        path = f"/model/layers.{i}/moe"
        i64 = lambda v: e.const(np.asarray(v, np.int64))
        flat = e.op("Reshape", f"{path}/flatten", [x2, i64([-1, d.hidden_size])])
        t = self._tensor
        R = d.router_hidden_size
        if i == 0:
            state_scale = e.const(np.zeros(R, np.float32))
        else:
            state_scale = t(pre + "gate.router_states_scale")
        bias_name = pre + "gate.balancing_biases"
        E = d.num_experts

        def balancing(name=bias_name):
            b = self.ckpt.read(name).copy() if self.ckpt.has(name) else np.zeros(E + 1, np.float32)
            if self.ckpt.resets_skip_bias or not self.ckpt.has(name):
                b[-1] = -1.0  # what transformers' loader (and its init) sets
            return b.astype(np.float32)

        router_inputs = [
            flat, router_state,
            t(pre + "gate.down_proj.weight", transform=np.transpose, shape=(d.hidden_size, R)),
            t(pre + "gate.down_proj.bias"), state_scale,
            t(pre + "gate.router_mlp.norm.weight"),
            t(pre + "gate.router_mlp.fc1.weight", transform=np.transpose, shape=(R, R)),
            t(pre + "gate.router_mlp.fc1.bias"),
            t(pre + "gate.router_mlp.fc2.weight", transform=np.transpose, shape=(R, R)),
            t(pre + "gate.router_mlp.fc2.bias"),
            t(pre + "gate.router_mlp.out_proj.weight", transform=np.transpose, shape=(R, E + 1)),
            e.weight(bias_name, FLOAT, (E + 1,), balancing),
        ]
        state, select, weight = e.op(
            A.ROUTER_OP, f"{path}/router", router_inputs, {"epsilon": d.rms_norm_eps}, domain=A.ZAYA_DOMAIN, outputs=3
        )
        m = self._experts(i, path, flat, select, weight)
        m = e.op("Reshape", f"{path}/unflatten", [m, e.op("Shape", f"{path}/x_shape", [x2])])
        return m, state

    def _experts(self, i, path, flat, select, weight):
        """fp32 experts: MoE picks the one-hot expert with weight 1, then ·router weight.
        Quantized: QMoE takes the router weight itself (router_weights input)."""
        e, d = self.e, self.dims
        pre = f"model.layers.{i}.mlp.experts."
        if self.q is not None:
            return self.q.experts(f"{path}/experts", pre, flat, select, weight)
        E, I, H = d.num_experts, d.moe_intermediate_size, d.hidden_size

        def interleave(w):  # [E, 2I, H] gate rows then up rows -> rows 2j = gate j, 2j+1 = up j
            out = np.empty_like(w)
            out[:, 0::2], out[:, 1::2] = w[:, :I], w[:, I:]
            return out

        fc1 = self._tensor(pre + "gate_up_proj", transform=interleave)
        fc2 = self._tensor(pre + "down_proj")
        y = e.op(
            "MoE", f"{path}/experts", [flat, select, fc1, None, fc2],
            {"k": 1, "activation_type": "swiglu", "swiglu_fusion": 1, "activation_alpha": 1.0,
             "activation_beta": 0.0, "normalize_routing_weights": 1},
            domain=MS,
        )
        w = self.e.op("ReduceSum", f"{path}/route_weight", [weight, self.e.const(np.asarray([1], np.int64))], {"keepdims": 1})
        return e.op("Mul", f"{path}/weighted", [y, w])

    def _head(self, h):
        """Final RMSNorm and the (tied) lm_head, on the last position unless all_logits."""
        e, d = self.e, self.dims
        path = "/model/lm_head"
        i64 = lambda v: e.const(np.asarray(v, np.int64))
        if not self.opt.all_logits:
            h = e.op("Slice", f"{path}/last_position", [h, i64([-1]), i64([INT64_MAX]), i64([1])])
        n = self._rmsnorm("/model/norm", h, "model.norm.weight")
        flat = e.op("Reshape", f"{path}/flatten", [n, i64([-1, d.hidden_size])])
        bias = self._tensor("lm_head.bias") if d.lm_head_bias else None
        if self.q is not None:
            table = self.embed_table if d.tie_word_embeddings else self.q.table("lm_head.weight")
            logits = self.q.head(path, table, flat, bias)
        else:
            table = self.embed_table if d.tie_word_embeddings else self._tensor("lm_head.weight")
            inputs = [flat, table] + ([bias] if bias is not None else [])
            logits = e.op("Gemm", f"{path}/Gemm", inputs, {"transB": 1})
        batch_seq = e.op("Slice", f"{path}/batch_seq", [e.op("Shape", f"{path}/h_shape", [n]), i64([0]), i64([2]), i64([0])])
        shape = e.op("Concat", f"{path}/logits_shape", [batch_seq, i64([d.vocab_size])], {"axis": 0})
        return e.op("Reshape", f"{path}/logits", [logits, shape])


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


def _dtype(name: str) -> ir.DataType:
    return {"float32": ir.DataType.FLOAT, "int64": ir.DataType.INT64}[name]
