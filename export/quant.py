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

# Candidate clipping ratios of the MSE search (fractions of the block's range), then one
# least-squares rescale of the winner. Chosen to stay within ~6x the cost of RTN.
_MSE_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)
_CHUNK_ELEMENTS = 1 << 18  # rows are processed in chunks of ~1 MB of fp32 to stay in cache


def whole_blocks(size: int, block: int) -> int:
    """Blocks of `block` values that hold `size` values (the last one zero-padded)."""
    return -(-size // block)


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
    n_blocks = whole_blocks(k, spec.block_size)
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
# x is [rows, n_blocks, block] fp32; scales and zero points are [rows, n_blocks]. During the
# search codes stay float (no uint8 round trips) and division is a multiply by 1/scale.
def _blocks(w: np.ndarray, block: int) -> np.ndarray:
    rows, k = w.shape
    pad = -k % block
    w = np.asarray(w, np.float32)
    if pad:
        w = np.concatenate([w, np.zeros((rows, pad), np.float32)], axis=1)
    return w.reshape(rows, -1, block)


def _quantize_blocks(x: np.ndarray, spec: QuantSpec, scale_dtype):
    if spec.symmetric:
        zp = np.full(x.shape[:-1], spec.mid, np.float32)
        base = _symmetric_scale(x, spec)
        candidates = [(base * np.float32(r), zp) for r in (_MSE_RATIOS if spec.method == "mse" else (1.0,))]
        refit = _refit_symmetric
    else:
        lo, hi = np.minimum(x.min(-1), 0), np.maximum(x.max(-1), 0)
        candidates = [_asymmetric_params(lo * np.float32(r), hi * np.float32(r), spec)
                      for r in (_MSE_RATIOS if spec.method == "mse" else (1.0,))]
        refit = _refit_asymmetric
    best = _best(x, candidates, spec, scale_dtype)
    if spec.method == "mse":
        best = _best(x, [best, refit(x, *best, spec)], spec, scale_dtype)
    s, z = best
    q = _codes(x, s, z, spec)
    return q.astype(np.uint8), s.astype(scale_dtype), None if spec.symmetric else z.astype(np.uint8)


def _symmetric_scale(x, spec):
    """The block's largest-magnitude value maps exactly onto -2^(bits-1) (the sign-aware scale
    uses the full [-8, 7] range instead of wasting -8); the scale may be negative."""
    idx = np.abs(x).argmax(-1)[..., None]
    extreme = np.take_along_axis(x, idx, -1)[..., 0]
    return (extreme / -np.float32(spec.mid)).astype(np.float32)


def _codes(x, scale, zp, spec):
    """Stored codes as float: clip(rint(x / scale) + zp, 0, qmax); a zero scale gives zp."""
    inv = np.divide(1, scale, out=np.zeros_like(scale), where=scale != 0)
    q = x * inv[..., None]
    np.rint(q, out=q)
    q += zp[..., None]
    return np.clip(q, 0, spec.qmax, out=q)


def _sq_error(x, scale, zp, spec):
    d = _codes(x, scale, zp, spec)
    d -= zp[..., None]
    d *= scale[..., None]
    d -= x
    return np.einsum("...i,...i->...", d, d)


def _best(x, candidates, spec, scale_dtype):
    """Per block, the (scale, zero point) candidate with the least squared error."""
    best_s, best_z, best_err = None, None, None
    for s, z in candidates:
        s = s.astype(scale_dtype).astype(np.float32)  # judge what will be stored
        if len(candidates) == 1:
            return s, z
        err = _sq_error(x, s, z, spec)
        if best_s is None:
            best_s, best_z, best_err = s, z, err
        else:
            better = err < best_err
            best_s, best_z = np.where(better, s, best_s), np.where(better, z, best_z)
            best_err = np.minimum(err, best_err)
    return best_s, best_z


def _refit_symmetric(x, scale, zp, spec):
    """Least-squares scale for fixed codes: s = <x, q> / <q, q>."""
    q = _codes(x, scale, zp, spec)
    q -= zp[..., None]
    num = np.einsum("...i,...i->...", x, q)
    den = np.einsum("...i,...i->...", q, q)
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1), scale).astype(np.float32), zp


def _asymmetric_params(lo, hi, spec):
    scale = ((hi - lo) / np.float32(spec.qmax)).astype(np.float32)
    inv = np.divide(1, scale, out=np.zeros_like(scale), where=scale != 0)
    zp = np.clip(np.rint(-lo * inv), 0, spec.qmax).astype(np.float32)
    return scale, zp


def _refit_asymmetric(x, scale, zp, spec):
    """Least-squares (scale, offset) for fixed codes, the zero point rounded back to an integer."""
    q = _codes(x, scale, zp, spec)
    n = np.float32(x.shape[-1])
    sq, sx = q.sum(-1), x.sum(-1)
    sqq, sqx = np.einsum("...i,...i->...", q, q), np.einsum("...i,...i->...", q, x)
    den = n * sqq - sq * sq
    ok = den > 0
    s = np.where(ok, (n * sqx - sq * sx) / np.where(ok, den, 1), scale).astype(np.float32)
    c = np.where(ok, (sx - s * sq) / n, -zp * scale)
    inv = np.divide(1, s, out=np.zeros_like(s), where=s != 0)
    z = np.clip(np.rint(-c * inv), 0, spec.qmax).astype(np.float32)
    bad = (s <= 0) | ~ok
    return np.where(bad, scale, s), np.where(bad, zp, z)
