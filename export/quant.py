"""Block quantization of weight matrices: round-to-nearest and a data-free MSE scale search.

Every row of a `[rows, K]` matrix is cut into blocks of `block_size` along K (the last block
zero-padded when K is not a multiple); each block gets one scale (and, asymmetric, one integer
zero point). Values are returned *stored* — unsigned, with the zero point added — which is the
form MatMulNBits, QMoE and GatherBlockQuantized all read:

    w ≈ (q - zero_point) · scale      q in [0, 2^bits - 1]; symmetric zero_point = 2^(bits-1)

Scales are rounded to their storage dtype *before* q is computed, so what is stored is exactly
what the error was minimised for.
"""

from __future__ import annotations

import dataclasses

import numpy as np

METHODS = ("rtn", "mse")
BITS = (4, 8)
BLOCK_SIZES = (16, 32, 64, 128, 256)

# Candidate clipping ratios of the MSE search (fractions of the block's range), then one
# least-squares rescale of the winner. Chosen to stay within ~6x the cost of RTN.
_MSE_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)
_CHUNK_ELEMENTS = 1 << 20  # rows are processed in chunks of ~4 MB of fp32 to stay in cache


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    method: str = "rtn"

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def mid(self) -> int:
        """The implicit zero point of symmetric quantization (what the kernels assume)."""
        return 1 << (self.bits - 1)


@dataclasses.dataclass
class Blocks:
    """Quantized rows: q [rows, n_blocks, block] uint8, scales [rows, n_blocks], zero_points or None."""

    q: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None


def quantize(w: np.ndarray, spec: QuantSpec, scale_dtype=np.float32) -> Blocks:
    """Quantize a 2-D fp32 matrix row-blockwise (rows are independent; done in chunks)."""
    rows, k = w.shape
    n_blocks = -(-k // spec.block_size)
    q = np.empty((rows, n_blocks, spec.block_size), np.uint8)
    scales = np.empty((rows, n_blocks), scale_dtype)
    zps = None if spec.symmetric else np.empty((rows, n_blocks), np.uint8)
    step = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for r0 in range(0, rows, step):
        blocks = _blocks(w[r0 : r0 + step], spec.block_size)
        qq, s, z = _quantize_blocks(blocks, spec, scale_dtype)
        q[r0 : r0 + step], scales[r0 : r0 + step] = qq, s
        if zps is not None:
            zps[r0 : r0 + step] = z
    return Blocks(q, scales, zps)


def dequantize(b: Blocks, spec: QuantSpec, k: int) -> np.ndarray:
    """fp32 [rows, k] the stored blocks stand for (the padding is dropped)."""
    zp = b.zero_points if b.zero_points is not None else np.full(b.scales.shape, spec.mid, np.uint8)
    w = (b.q.astype(np.float32) - zp[..., None].astype(np.float32)) * b.scales[..., None].astype(np.float32)
    return w.reshape(w.shape[0], -1)[:, :k]


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint4 values -> bytes along the last axis: even index in the low nibble (odd length padded)."""
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def pack_values(q: np.ndarray, bits: int) -> np.ndarray:
    """Stored values as the kernels' bytes: nibble pairs for 4 bits, as they are for 8."""
    return pack_nibbles(q) if bits == 4 else np.ascontiguousarray(q, dtype=np.uint8)


# ---- internals ---------------------------------------------------------------------------------
def _blocks(w: np.ndarray, block: int) -> np.ndarray:
    rows, k = w.shape
    pad = -k % block
    w = np.asarray(w, np.float32)
    if pad:
        w = np.concatenate([w, np.zeros((rows, pad), np.float32)], axis=1)
    return w.reshape(rows, -1, block)


def _quantize_blocks(x: np.ndarray, spec: QuantSpec, scale_dtype):
    if spec.symmetric:
        scale = _symmetric_scale(x, spec)
        candidates = [scale]
        if spec.method == "mse":
            candidates = [scale * np.float32(r) for r in _MSE_RATIOS]
        best = _best_symmetric(x, candidates, spec, scale_dtype)
        if spec.method == "mse":
            best = _best_symmetric(x, [best, _refit_symmetric(x, best, spec)], spec, scale_dtype)
        s = best.astype(scale_dtype)
        return _round(x, s, np.float32(spec.mid), spec), s, None
    lo, hi = np.minimum(x.min(-1), 0), np.maximum(x.max(-1), 0)
    ratios = _MSE_RATIOS if spec.method == "mse" else (1.0,)
    best_err, best = None, None
    for r in ratios:
        cand = _asymmetric_params(lo * np.float32(r), hi * np.float32(r), spec, scale_dtype)
        if spec.method == "mse":
            err = _error(x, *cand, spec)
            cand2 = _refit_asymmetric(x, *cand, spec, scale_dtype)
            err2 = _error(x, *cand2, spec)
            better = err2 < err
            cand = tuple(np.where(better, b, a) for a, b in zip(cand, cand2))
            err = np.minimum(err, err2)
        else:
            err = None
        if best is None:
            best, best_err = cand, err
        else:
            better = err < best_err
            best = tuple(np.where(better, b, a) for a, b in zip(best, cand))
            best_err = np.minimum(best_err, err)
    s, z = best
    return _round(x, s, z.astype(np.float32), spec), s.astype(scale_dtype), z.astype(np.uint8)


def _symmetric_scale(x, spec):
    """The block's largest-magnitude value maps exactly onto -2^(bits-1) (the sign-aware scale
    uses the full [-8, 7] range instead of wasting -8); the scale may be negative."""
    idx = np.abs(x).argmax(-1)[..., None]
    extreme = np.take_along_axis(x, idx, -1)[..., 0]
    return (extreme / -np.float32(spec.mid)).astype(np.float32)


def _round(x, scale, zp, spec):
    s = scale.astype(np.float32)[..., None]
    safe = np.where(s == 0, np.float32(1), s)
    zp = np.broadcast_to(zp, scale.shape)[..., None] if np.ndim(zp) else zp
    q = np.rint(x / safe) + zp
    q = np.where(s == 0, zp, q)
    return np.clip(q, 0, spec.qmax).astype(np.uint8)


def _error(x, scale, zp, spec):
    s = scale.astype(np.float32)
    zpf = np.broadcast_to(np.asarray(zp, np.float32), s.shape)
    q = _round(x, s, zpf, spec).astype(np.float32)
    d = (q - zpf[..., None]) * s[..., None] - x
    return np.einsum("...i,...i->...", d, d)


def _best_symmetric(x, candidates, spec, scale_dtype):
    if len(candidates) == 1:
        return candidates[0]
    mid = np.float32(spec.mid)
    best, best_err = None, None
    for c in candidates:
        c = c.astype(scale_dtype).astype(np.float32)
        err = _error(x, c, mid, spec)
        if best is None:
            best, best_err = c, err
        else:
            better = err < best_err
            best = np.where(better, c, best)
            best_err = np.minimum(err, best_err)
    return best


def _refit_symmetric(x, scale, spec):
    """Least-squares scale for fixed codes: s = <x, q> / <q, q>."""
    q = _round(x, scale, np.float32(spec.mid), spec).astype(np.float32) - np.float32(spec.mid)
    num = np.einsum("...i,...i->...", x, q)
    den = np.einsum("...i,...i->...", q, q)
    return np.where(den > 0, num / np.where(den > 0, den, 1), scale).astype(np.float32)


def _asymmetric_params(lo, hi, spec, scale_dtype):
    scale = ((hi - lo) / np.float32(spec.qmax)).astype(scale_dtype).astype(np.float32)
    safe = np.where(scale == 0, np.float32(1), scale)
    zp = np.clip(np.rint(-lo / safe), 0, spec.qmax).astype(np.float32)
    return scale, zp


def _refit_asymmetric(x, scale, zp, spec, scale_dtype):
    """Least-squares (scale, offset) for fixed codes, the zero point rounded back to an integer."""
    q = _round(x, scale, zp, spec).astype(np.float32)
    n = np.float32(x.shape[-1])
    sq, sx = q.sum(-1), x.sum(-1)
    sqq, sqx = np.einsum("...i,...i->...", q, q), np.einsum("...i,...i->...", q, x)
    den = n * sqq - sq * sq
    ok = den > 0
    s = np.where(ok, (n * sqx - sq * sx) / np.where(ok, den, 1), scale)
    c = np.where(ok, (sx - s * sq) / n, -zp * scale)
    s = s.astype(scale_dtype).astype(np.float32)
    safe = np.where(s == 0, np.float32(1), s)
    z = np.clip(np.rint(-c / safe), 0, spec.qmax).astype(np.float32)
    bad = (s <= 0) | ~ok
    return np.where(bad, scale, s), np.where(bad, zp, z)
