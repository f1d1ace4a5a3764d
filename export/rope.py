"""RoPE as transformers computes it for ZAYA, every rope type its rotary embedding takes.

`inv_freq` ports transformers' ROPE_INIT_FUNCTIONS (modeling_rope_utils.py) and ZAYA's default to
numpy, step by step in the dtypes torch uses (fp32 tensors, Python-float scalars). Each layer type
hands RotaryEmbedding (com.microsoft, applied outside GroupQueryAttention: any head_dim, any even
rotary width) its positions and cos/sin rows:

    static (default, linear, yarn, llama3, proportional):
        positions ─► tables [context_length, n] = cos|sin(position·inv_freq)·attention_scaling
    longrope (short factors while the call's length L ≤ original_max_position_embeddings, else long):
        positions + context_length·(L > original_max) ─► short ‖ long tables [2·context_length, n]
    dynamic (NTK: past max_position_embeddings M the base grows with L):
        L = max(positions)+1 ─ L > M ? 1/(base·(factor·L/M − (factor−1))^(dim/(dim−2)))^(2i/dim) : default
        positions·inv_freq ─ cos|sin ─► rows [B·S, n], read at positions 0..B·S−1

transformers keeps the dynamic and longrope frequencies in module state between forward calls;
here every call derives them from its own positions, which is what transformers computes within
one `generate` (its lengths only grow).
"""

from __future__ import annotations

import math

import numpy as np

from zaya_edge.config import ZayaDims
from zaya_edge.errors import CheckpointError

from .emitter import FLOAT, Emitter

F32 = np.float32


def _steps(dim: int, count: int | None = None) -> np.ndarray:
    """arange(0, dim, 2) (or 2·count) as fp32: the numerators of the exponents."""
    return np.arange(0, dim if count is None else 2 * count, 2).astype(F32)


def _powers(base: float, dim: int, count: int | None = None, denominator: int | None = None) -> np.ndarray:
    """base ** (arange(...).float() / dim) in fp32, as torch computes it."""
    return (F32(base) ** (_steps(dim, count) / F32(denominator or dim))).astype(F32)


def inv_freq(dims: ZayaDims, lt: str, long: bool = False) -> tuple[np.ndarray, float]:
    """(inverse frequencies fp32 [n], attention scaling) of layer type `lt` as transformers' init
    computes them (longrope: the long factors with `long`); CheckpointError where it fails."""
    kind = dims.rope_kind(lt)
    args = (dims, lt, dims.rope_scaling.get(lt, {}), dims.rope_theta[lt], int(dims.head_dim * dims.partial_rotary_factor[lt]))
    try:
        with np.errstate(all="ignore"):
            inv, scaling = _INIT[kind](*args, long)
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise CheckpointError(f"transformers' {kind} RoPE init fails for {lt} layers: {exc}") from None
    inv = np.asarray(inv, F32).reshape(-1)
    _check_finite(inv, scaling, kind, lt)
    return inv, float(scaling)


def _check_finite(inv: np.ndarray, scaling: float, kind: str, lt: str) -> None:
    if not (np.isfinite(inv).all() and math.isfinite(scaling)):
        raise CheckpointError(f"the {kind} RoPE parameters of {lt} layers give non-finite frequencies "
                              "(transformers' model computes NaN with them)")


def _default(d, lt, s, base, dim, long):
    return F32(1.0) / _powers(base, dim), 1.0


def _linear(d, lt, s, base, dim, long):
    return (F32(1.0) / _powers(base, dim)) / F32(s["factor"]), 1.0


def _dynamic(d, lt, s, base, dim, long):
    m, factor = d.max_position_embeddings, s["factor"]
    base = base * ((factor * m / m) - (factor - 1)) ** (dim / (dim - 2))
    return F32(1.0) / _powers(base, dim), 1.0


def dynamic_inv_freq(dims: ZayaDims, lt: str, length: int) -> np.ndarray:
    """The dynamic type's frequencies for a call whose last position is length-1 (fp32 throughout,
    as transformers' update computes them from a tensor length), in numpy: what the graph emits."""
    s, m = dims.rope_scaling[lt], dims.max_position_embeddings
    dim = int(dims.head_dim * dims.partial_rotary_factor[lt])
    if length <= m:
        return inv_freq(dims, lt)[0]
    with np.errstate(all="ignore"):
        t = (F32(s["factor"]) * F32(length) / F32(m) - F32(s["factor"] - 1)) ** F32(dim / (dim - 2))
        inv = (F32(1.0) / (F32(dims.rope_theta[lt]) * t) ** (_steps(dim) / F32(dim))).astype(F32)
    _check_finite(inv, 1.0, "dynamic", lt)
    return inv


def _yarn(d, lt, s, base, dim, long):
    orig = s["original_max_position_embeddings"]
    factor = d.max_position_embeddings / orig if s.get("factor") is None else s["factor"]
    attention = s.get("attention_factor")
    if attention is None:
        ms, ms_all = s.get("mscale"), s.get("mscale_all_dim")
        attention = _mscale(factor, ms) / _mscale(factor, ms_all) if ms and ms_all else _mscale(factor)
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction(rotations):
        return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction(beta_fast), correction(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=F32) - F32(low)) / F32(high - low), 0, 1).astype(F32)
    pos_freqs, extrapolation = _powers(base, dim), F32(1) - ramp
    inv = (F32(1.0) / (F32(factor) * pos_freqs)) * (F32(1) - extrapolation) + (F32(1.0) / pos_freqs) * extrapolation
    return inv, float(attention)


def _mscale(scale, mscale=1):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _longrope(d, lt, s, base, dim, long):
    orig = s["original_max_position_embeddings"]
    factor = d.max_position_embeddings / orig if s.get("factor") is None else s["factor"]
    attention = s.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    ext = np.asarray(s["long_factor" if long else "short_factor"], F32)
    return F32(1.0) / (ext * _powers(base, dim)), float(attention)


def _llama3(d, lt, s, base, dim, long):
    inv = F32(1.0) / _powers(base, dim)
    factor, low, high, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = F32(2 * math.pi) / inv
    llama = np.where(wavelen > F32(low_wavelen), inv / F32(factor), inv).astype(F32)
    smooth = (F32(old) / wavelen - F32(low)) / F32(high - low)
    smoothed = (F32(1) - smooth) * llama / F32(factor) + smooth * llama
    medium = ~(wavelen < F32(high_wavelen)) & ~(wavelen > F32(low_wavelen))
    return np.where(medium, smoothed, llama), 1.0


def _proportional(d, lt, s, base, dim, long):
    head = d.head_dim
    angles = int(d.partial_rotary_factor[lt] * head // 2)
    inv = F32(1.0) / _powers(base, 0, angles, head)
    if head // 2 - angles > 0:
        inv = np.concatenate([inv, np.zeros(head // 2 - angles, F32)])
    return inv / F32(1.0 if s.get("factor") is None else s["factor"]), 1.0


_INIT = {"default": _default, "linear": _linear, "dynamic": _dynamic, "yarn": _yarn, "longrope": _longrope,
         "llama3": _llama3, "proportional": _proportional}


def table(inv: np.ndarray, scaling: float, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [length, n] of positions 0..length-1: `(position.float() · inv_freq).cos() · scaling`."""
    freqs = np.arange(length, dtype=F32)[:, None] * inv[None, :]
    cos, sin = np.cos(freqs).astype(F32), np.sin(freqs).astype(F32)
    if scaling != 1.0:
        cos, sin = cos * F32(scaling), sin * F32(scaling)
    if not (np.isfinite(cos).all() and np.isfinite(sin).all()):
        raise CheckpointError("RoPE tables are not finite over the context (frequencies too large)")
    return cos, sin


def check_rope(dims: ZayaDims, length: int) -> None:
    """Everything `RopeTables` will compute is computable and finite (before anything is written)."""
    for lt in sorted(set(dims.layer_types)):
        inv, _ = inv_freq(dims, lt)
        if dims.rope_kind(lt) == "longrope":
            inv = np.concatenate([inv, inv_freq(dims, lt, long=True)[0]])
        if dims.rope_kind(lt) == "dynamic":
            inv = np.concatenate([inv, dynamic_inv_freq(dims, lt, length)])
        if not np.isfinite(inv * F32(max(length - 1, 0))).all():
            raise CheckpointError(f"RoPE angles of {lt} layers overflow over a context of {length} positions")


class RopeTables:
    """Per layer type, what RotaryEmbedding reads: (positions, cos, sin), or None when it rotates nothing."""

    def __init__(self, e: Emitter, dims: ZayaDims, length: int):
        self.e, self.d, self.length = e, dims, length

    def __call__(self, lt: str, position_ids):
        if self.d.rotary_dim(lt) == 0:
            return None
        kind, p = self.d.rope_kind(lt), f"/model/rope/{lt}"
        if kind == "dynamic":
            return self._dynamic(lt, p, position_ids)
        inv, scaling = inv_freq(self.d, lt)
        cos, sin = table(inv, scaling, self.length)
        if kind == "longrope":
            long_cos, long_sin = table(inv_freq(self.d, lt, long=True)[0], scaling, self.length)
            cos, sin = np.concatenate([cos, long_cos]), np.concatenate([sin, long_sin])
            position_ids = self._long_positions(lt, p, position_ids)
        e = self.e
        return position_ids, e.eager_weight(f"{p}/cos_cache", cos), e.eager_weight(f"{p}/sin_cache", sin)

    def _call_length(self, p, position_ids):
        longest = self.e.op("ReduceMax", f"{p}/longest", [position_ids], {"keepdims": 0})
        return self.e.op("Add", f"{p}/call_length", [longest, self.e.i64(1)])

    def _long_positions(self, lt, p, position_ids):
        """positions into the long half when the call's length passes original_max_position_embeddings."""
        e = self.e
        threshold = math.floor(self.d.rope_scaling[lt]["original_max_position_embeddings"])
        is_long = e.op("Greater", f"{p}/is_long", [self._call_length(p, position_ids), e.i64(threshold)])
        offset = e.op("Where", f"{p}/long_offset", [is_long, e.i64(self.length), e.i64(0)])
        return e.op("Add", f"{p}/table_positions", [position_ids, offset])

    def _dynamic(self, lt, p, position_ids):
        """transformers' dynamic_frequency_update + compute: fp32 ops on the call's length L.

            L ─ max(L, M) ─ ·factor /M −(factor−1) ─ ^(dim/(dim−2)) ─ ·base ─ ^(2i/dim) ─ 1/x ─┐
            L > M ───────────────────────────────────────────────── Where ◄── default inv_freq ┘
            positions·inv_freq ─ Cos|Sin ─ [B·S, n];  positions 0..B·S−1 read them row by row
        """
        e, d, s = self.e, self.d, self.d.rope_scaling[lt]
        m, dim, factor = d.max_position_embeddings, int(d.head_dim * d.partial_rotary_factor[lt]), s["factor"]
        length = self._call_length(p, position_ids)
        lf = e.op("Cast", f"{p}/length_f", [e.op("Max", f"{p}/length_at_least_max", [length, e.i64(m)])], {"to": FLOAT})
        t = e.op("Div", f"{p}/length_ratio", [e.op("Mul", f"{p}/factor_length", [e.const(F32(factor)), lf]), e.const(F32(m))])
        t = e.op("Sub", f"{p}/ntk", [t, e.const(F32(factor - 1))])
        t = e.op("Pow", f"{p}/ntk_pow", [t, e.const(F32(dim / (dim - 2)))])
        base = e.op("Mul", f"{p}/base", [e.const(F32(d.rope_theta[lt])), t])
        powers = e.op("Pow", f"{p}/powers", [base, e.const(_steps(dim) / F32(dim))])
        grown = e.op("Div", f"{p}/inv_freq_grown", [e.const(F32(1.0)), powers])
        beyond = e.op("Greater", f"{p}/beyond_max", [length, e.i64(m)])
        inv = e.op("Where", f"{p}/inv_freq", [beyond, grown, e.const(inv_freq(d, lt)[0])])
        pos = e.op("Unsqueeze", f"{p}/positions_3d", [e.op("Cast", f"{p}/positions_f", [position_ids], {"to": FLOAT}), e.i64([2])])
        freqs = e.op("Mul", f"{p}/freqs", [pos, inv])
        n = d.rotary_dim(lt) // 2
        cos = e.op("Reshape", f"{p}/cos_rows", [e.op("Cos", f"{p}/cos", [freqs]), e.i64([-1, n])])
        sin = e.op("Reshape", f"{p}/sin_rows", [e.op("Sin", f"{p}/sin", [freqs]), e.i64([-1, n])])
        rows = e.op("Range", f"{p}/rows", [e.i64(0), e.op("Size", f"{p}/tokens", [position_ids]), e.i64(1)])
        rows = e.op("Reshape", f"{p}/row_positions", [rows, e.op("Shape", f"{p}/positions_shape", [position_ids])])
        return rows, cos, sin
