"""Compressed Convolutional Attention (CCA), one layer, emitted piece by piece.

    x·mask ─ MatMul[q|k|v_cur|v_del] ─┬─ qk ─ ‖past_conv ─ Conv(depthwise∘grouped, folded) ──┐
                                      ├─ q,k residual (q+k)/2, group mean ───────────── (+) ─ q,k
                                      ├─ v_cur ─────────────┐
                                      └─ v_del ─ shift by 1 ─┴─ concat ─ v
    q,k ─ L2 norm·√D (k·temp) ─ RoPE(token positions) ─ CachedAttention(mask) ─ o_proj

Each piece is one method, called in the order of the diagram, which is the order of the nodes.
With attention_bias every projection adds its bias, and a row with no past token takes the
delayed value of "no token", v_proj_delayed(0) = its bias, as transformers does. Head sizes
GroupQueryAttention's kernel refuses (not a multiple of 8) attend in plain ops (attention.py);
the others through ai.zaya::CachedAttention (attention_op.py: a native kernel, GroupQueryAttention
as its function body).
"""

from __future__ import annotations

import numpy as np

from zaya_edge.artifact import ATTENTION_OP, ZAYA_DOMAIN
from zaya_edge.config import ZayaDims

from .attention import plain_attention
from .emitter import INT64_MAX, Emitter
from .layers import MS, Layers

F32_EPS = float(np.finfo(np.float32).eps)


class CompressedConvAttention:
    """The attention block of layer `i`; `ctx` holds what all layers share (masks, RoPE caches)."""

    def __init__(self, e: Emitter, layers: Layers, dims: ZayaDims, i: int):
        self.e, self.layers, self.d = e, layers, dims
        self.layer_type = dims.layer_types[i]
        self.pre = f"model.layers.{i}.self_attn."
        self.path = f"/model/layers.{i}/attn"

    def __call__(self, x, past: dict, ctx: dict):
        """x [B,S,H] ─► o [B,S,H] and this layer's present state (key, value, conv, recurrent)."""
        e, p = self.e, self.path
        x = e.op("Mul", f"{p}/pad_zero", [x, ctx["token_mask"]])
        qk, v_cur, v_del = self._projections(x)
        q_res, k_res = self._residual_means(qk)
        conv_q, conv_k, present_conv = self._causal_conv(qk, past["conv"])
        q = e.op("Add", f"{p}/q", [conv_q, q_res])
        k = e.op("Add", f"{p}/k", [conv_k, k_res])
        v, present_rec = self._delayed_value(v_cur, v_del, past["recurrent"], ctx)
        q, k = self._qk_norm(q, k)
        q, k = self._rope(q, k, ctx)
        if self.d.head_dim % 8:
            attn, present_k, present_v = plain_attention(self.e, p, (q, k, v), past, ctx, self.d, self._window())
        else:
            attn, present_k, present_v = self._cached_attention(q, k, v, past, ctx)
        o = self.layers.linear(f"{p}/o_proj", attn, self.pre + "o_proj", [self.pre + "o_proj.weight"],
                               self._bias(self.pre + "o_proj", ["o_proj"]))
        return o, {"key": present_k, "value": present_v, "conv": present_conv, "recurrent": present_rec}

    def _projections(self, x):
        """x ─ one fused MatMul ─ split ─► qk [B,S,C] (the conv reads q and k together), v_cur, v_del"""
        e, d, pre = self.e, self.d, self.pre
        parts = [f"qkv_proj.{n}" for n in ("q_proj", "k_proj", "v_proj_current", "v_proj_delayed")]
        qkv = self.layers.linear(f"{self.path}/qkv_proj", x, f"{pre}qkv_proj.qkv", [pre + n + ".weight" for n in parts],
                                 self._bias(f"{pre}qkv_proj.qkv", parts))
        sizes = e.i64([d.conv_channels, d.value_half, d.value_half])
        return e.op("Split", f"{self.path}/qkv_split", [qkv, sizes], {"axis": -1}, outputs=3)

    def _bias(self, name: str, parts: list[str]):
        """The fused projection's bias (attention_bias), else None."""
        if not self.d.attention_bias:
            return None
        return self.layers.bias(name + ".bias", [self.pre + n + ".bias" for n in parts])

    def _residual_means(self, qk):
        """The residual paths: q_res[h] = (q[h] + k[h//g]) / 2 ; k_res[j] = mean of its group's q_res

            qk ─ split ─ q [.., Hkv, g, D] + k [.., Hkv, 1, D] ─ ·½ ─► q_res ─ mean over g ─► k_res
        """
        e, d, p = self.e, self.d, self.path
        D, Hq, Hkv = d.head_dim, d.num_heads, d.num_kv_heads
        q_lin, k_lin = e.op("Split", f"{p}/qk_split", [qk, e.i64([Hq * D, Hkv * D])], {"axis": -1}, outputs=2)
        q5 = e.op("Reshape", f"{p}/q_groups", [q_lin, e.i64([0, 0, Hkv, Hq // Hkv, D])])
        k5 = e.op("Reshape", f"{p}/k_groups", [k_lin, e.i64([0, 0, Hkv, 1, D])])
        q_res = e.op("Mul", f"{p}/q_res", [e.op("Add", f"{p}/q_plus_k", [q5, k5]), e.const(np.float32(0.5))])
        k_res = e.op("ReduceMean", f"{p}/k_res", [q_res, e.i64([3])], {"keepdims": 0})
        q_res = e.op("Reshape", f"{p}/q_res_flat", [q_res, e.i64([0, 0, Hq * D])])
        k_res = e.op("Reshape", f"{p}/k_res_flat", [k_res, e.i64([0, 0, Hkv * D])])
        return q_res, k_res

    def _causal_conv(self, qk, past_conv):
        """The causal time convolution over (past conv state ‖ new tokens).

            past_conv [B,C,t] ‖ qkᵀ [B,C,S] ─ Conv(composed) ─ᵀ─ split ─► conv_q, conv_k
                              └─ its last t columns ─► present_conv
        """
        e, d, p = self.e, self.d, self.path
        D, Hq, Hkv = d.head_dim, d.num_heads, d.num_kv_heads
        qk_t = e.op("Transpose", f"{p}/qk_channels_first", [qk], {"perm": [0, 2, 1]})
        window = e.op("Concat", f"{p}/conv_window", [past_conv, qk_t], {"axis": 2})
        keep = [e.i64([-d.conv_state_len]), e.i64([INT64_MAX])] if d.conv_state_len else [e.i64([0]), e.i64([0])]
        present_conv = e.op("Slice", f"{p}/present_conv", [window, *keep, e.i64([2])])
        weight, bias = self._composed_conv(f"{p}/conv_composed")
        gw = e.op("Conv", f"{p}/conv", [window, weight, bias], {"group": Hq + Hkv, "kernel_shape": [d.conv_state_len + 1]})
        conv = e.op("Transpose", f"{p}/conv_tokens_first", [gw], {"perm": [0, 2, 1]})
        conv_q, conv_k = e.op("Split", f"{p}/conv_split", [conv, e.i64([Hq * D, Hkv * D])], {"axis": -1}, outputs=2)
        return conv_q, conv_k, present_conv

    def _composed_conv(self, path):
        """One grouped convolution equal to CCA's depthwise-then-grouped pair.

        With d[t] = Σ_k a_k⊙x[t-t0+1+k] + b_d and o[t] = Σ_j G_j·d[t-t1+1+j] + b_g, the
        composition has taps m = j + k:  W_m = Σ_{j+k=m} G_j·diag(a_k),  b = Σ_j G_j·b_d + b_g.
        It is emitted as ops on the stored weights only, so onnxruntime folds it at load:
        the artifact keeps the checkpoint's weights, a decode step runs one Conv instead of
        two (half the time at one token).

            a [C,1,t0] ─ per-group expand ─┐
            G [C,D,t1] ────────────────────┴─ Σ_{j+k=m} G_j·a_k ─ Concat(m) ─► W [C,D,t0+t1-1]
        """
        e, d, t, pre = self.e, self.d, self.layers.tensor, self.pre + "qkv_proj."
        D, C, t0, t1 = d.head_dim, d.conv_channels, d.cca_time0, d.cca_time1
        G = d.num_heads + d.num_kv_heads
        a = t(pre + "conv_qk_depthwise.weight")  # [C, 1, t0]
        b_d = t(pre + "conv_qk_depthwise.bias")  # [C]
        g_w = t(pre + "conv_qk_grouped.weight")  # [C, D, t1]
        b_g = t(pre + "conv_qk_grouped.bias")  # [C]
        # a_exp[o, i, k] = a[group(o)·D + i, 0, k]: each output row sees its group's inputs
        a_exp = e.op("Reshape", f"{path}/a_groups", [a, e.i64([G, 1, D, t0])])
        a_exp = e.op("Expand", f"{path}/a_rows", [a_exp, e.i64([G, D, D, t0])])
        a_exp = e.op("Reshape", f"{path}/a_exp", [a_exp, e.i64([C, D, t0])])
        taps = []
        for m in range(t0 + t1 - 1):
            terms = []
            for j in range(max(0, m - t0 + 1), min(t1, m + 1)):  # the j with 0 <= k = m - j < t0
                k = m - j
                g_j = e.op("Slice", f"{path}/g{j}_for_{m}", [g_w, e.i64([j]), e.i64([j + 1]), e.i64([2])])
                a_k = e.op("Slice", f"{path}/a{k}_for_{m}", [a_exp, e.i64([k]), e.i64([k + 1]), e.i64([2])])
                terms.append(e.op("Mul", f"{path}/g{j}_a{k}", [g_j, a_k]))
            tap = terms[0]
            for n, term in enumerate(terms[1:]):
                tap = e.op("Add", f"{path}/tap{m}_sum{n}", [tap, term])
            taps.append(tap)
        weight = e.op("Concat", f"{path}/weight", taps, {"axis": 2})
        bd_exp = e.op("Reshape", f"{path}/bd_groups", [b_d, e.i64([G, 1, D, 1])])
        bd_exp = e.op("Expand", f"{path}/bd_rows", [bd_exp, e.i64([G, D, D, 1])])
        bd_exp = e.op("Reshape", f"{path}/bd_exp", [bd_exp, e.i64([C, D, 1])])
        g_bd = e.op("Mul", f"{path}/g_bd", [g_w, bd_exp])
        through = e.op("ReduceSum", f"{path}/bias_through", [g_bd, e.i64([1, 2])], {"keepdims": 0})
        return weight, e.op("Add", f"{path}/bias", [through, b_g])

    def _delayed_value(self, v_cur, v_del, past_recurrent, ctx):
        """Value heads: head 0 = the current token, head 1.. = the previous token's delayed projection.

            past_recurrent ‖ v_del[:, :-1] ─► v_delayed ;  v = v_cur ‖ v_delayed
            v_del[:, -1] ─► present_recurrent (the next call's previous token)
        With a bias, a row without past tokens starts from v_proj_delayed(0) = the bias, not 0.
        """
        e, p = self.e, self.path
        if self.d.attention_bias:
            bias = self.layers.tensor(self.pre + "qkv_proj.v_proj_delayed.bias")
            past_recurrent = e.op("Where", f"{p}/v_prev_or_bias", [ctx["has_past"], past_recurrent, bias])
        prev = e.op("Unsqueeze", f"{p}/v_prev", [past_recurrent, e.i64([1])])
        v_del_head = e.op("Slice", f"{p}/v_del_shift", [v_del, e.i64([0]), e.i64([-1]), e.i64([1])])
        v_delayed = e.op("Concat", f"{p}/v_delayed", [prev, v_del_head], {"axis": 1})
        present_rec = e.op("Gather", f"{p}/present_recurrent", [v_del, e.i64(-1)], {"axis": 1})
        return e.op("Concat", f"{p}/v", [v_cur, v_delayed], {"axis": -1}), present_rec

    def _qk_norm(self, q, k):
        """QK norm with temperature: x·√D/‖x‖ == x/rms(x) per head, then k·temp[kv head].

        eps² / D reproduces HF's clamp at the dtype's epsilon.
        """
        e, d, p = self.e, self.d, self.path
        D, Hq, Hkv = d.head_dim, d.num_heads, d.num_kv_heads
        norm = {"axis": -1, "epsilon": F32_EPS * F32_EPS / D}
        ones = e.const(np.ones(D, np.float32))
        q = e.op("Reshape", f"{p}/q_heads", [q, e.i64([0, 0, Hq, D])])
        q = e.op("SimplifiedLayerNormalization", f"{p}/q_norm", [q, ones], norm)
        q = e.op("Reshape", f"{p}/q_flat", [q, e.i64([0, 0, Hq * D])])
        k = e.op("Reshape", f"{p}/k_heads", [k, e.i64([0, 0, Hkv, D])])
        k = e.op("SimplifiedLayerNormalization", f"{p}/k_norm", [k, ones], norm)
        temp = self.layers.tensor(self.pre + "qk_norm.temp", transform=lambda t: t.reshape(-1, 1), shape=(Hkv, 1))
        k = e.op("Mul", f"{p}/k_temp", [k, temp])
        return q, e.op("Reshape", f"{p}/k_flat", [k, e.i64([0, 0, Hkv * D])])

    def _rope(self, q, k, ctx):
        """RoPE by token position (not by column) before attention; GQA's fused rotary would
        use columns for a first prompt, which breaks left-padded rows on the next step."""
        e, d, p = self.e, self.d, self.path
        if ctx["rope"][self.layer_type] is None:  # a rotary width of 0: nothing turns
            return q, k
        positions, cos, sin = ctx["rope"][self.layer_type]
        rot = d.rotary_dim(self.layer_type)
        q = e.op("RotaryEmbedding", f"{p}/q_rotary", [q, positions, cos, sin],
                 {"num_heads": d.num_heads, "rotary_embedding_dim": rot, "interleaved": 0}, domain=MS)
        k = e.op("RotaryEmbedding", f"{p}/k_rotary", [k, positions, cos, sin],
                 {"num_heads": d.num_kv_heads, "rotary_embedding_dim": rot, "interleaved": 0}, domain=MS)
        return q, k

    def _window(self) -> int:
        return self.d.sliding_window if self.layer_type == "hybrid_sliding" else -1

    def _cached_attention(self, q, k, v, past, ctx):
        """ai.zaya::CachedAttention over the key/value cache (attention_op.py): padding keys
        masked from the attention mask; GroupQueryAttention in its function body.

        local_window_size counts the keys a query sees, itself included (measured against
        HF's sliding layers: prompt, decode and left padding).
        """
        d = self.d
        return self.e.op(
            ATTENTION_OP, f"{self.path}/attention",
            [q, k, v, past["key"], past["value"], ctx["attention_mask"]],
            {"num_heads": d.num_heads, "kv_num_heads": d.num_kv_heads, "scale": float(d.head_dim ** -0.5),
             "local_window_size": self._window()},
            domain=ZAYA_DOMAIN, outputs=3,
        )
