"""The byte layouts onnxruntime's quantized kernels read (CPU EP, measured in onnxruntime-notes).

    MatMulNBits         B [N, n_blocks, block·bits/8] uint8   scales [N, n_blocks] (the type of A:
                        stored fp16 here and Cast to fp32, which onnxruntime folds at load)
                        zero_points [N, ceil(n_blocks·bits/8)] uint8 (absent when symmetric:
                        the kernel then assumes 2^(bits-1); an explicit all-8 buffer is garbage)
    GatherBlockQuantized the same B read as [V, n_blocks, block·bits/8] with quantize_axis 2,
                        scales [V, n_blocks, 1] (an Unsqueeze of the MatMulNBits scales),
                        zero_points [V, n_blocks, 1] (one per byte: packed along a length-1 axis)
    QMoE                fc1 [E, 2I, H·bits/8] with gate row j at 2j and up row j at 2j+1
                        (layers.interleave_gate_up); whole blocks only, so H and I are
                        zero-padded to them (quant_layers.QuantizedLayers.experts),
                        fc2 [E, H, I·bits/8], scales [E, rows, n_blocks], zero_points
                        [E, rows, ceil(n_blocks·bits/8)]

Everything here is numpy on one matrix (or one expert) at a time.
"""

from __future__ import annotations

import numpy as np

from .quant import Blocks, QuantSpec, pack_nibbles, pack_values, quantize, whole_blocks


def n_blocks(k: int, spec: QuantSpec) -> int:
    return whole_blocks(k, spec.block_size)


def packed_zero_point_width(k: int, spec: QuantSpec) -> int:
    return -(-n_blocks(k, spec) * spec.bits // 8)


def matmulnbits_shapes(n: int, k: int, spec: QuantSpec) -> dict[str, tuple[int, ...]]:
    nb = n_blocks(k, spec)
    shapes = {"B": (n, nb, spec.block_size * spec.bits // 8), "scales": (n, nb)}
    if not spec.symmetric:
        shapes["zero_points"] = (n, packed_zero_point_width(k, spec))
    return shapes


def matmulnbits_arrays(w: np.ndarray, spec: QuantSpec, scale_dtype=np.float16) -> dict[str, np.ndarray]:
    """nn.Linear weight [N, K] (fp32) -> MatMulNBits initializers."""
    b = quantize(w, spec, scale_dtype)
    out = {"B": pack_values(b.q, spec.bits), "scales": b.scales}
    if b.zero_points is not None:
        out["zero_points"] = pack_values(b.zero_points, spec.bits)
        out["gather_zero_points"] = b.zero_points[..., None].copy()
    return out


def qmoe_shapes(experts: int, rows: int, k: int, spec: QuantSpec) -> dict[str, tuple[int, ...]]:
    shapes = {
        "weights": (experts, rows, k * spec.bits // 8),
        "scales": (experts, rows, n_blocks(k, spec)),
    }
    if not spec.symmetric:
        shapes["zero_points"] = (experts, rows, packed_zero_point_width(k, spec))
    return shapes


def qmoe_expert(w: np.ndarray, spec: QuantSpec, scale_dtype=np.float16) -> Blocks:
    """One expert's [rows, K] matrix quantized for QMoE (K must be a multiple of the block)."""
    if w.shape[1] % spec.block_size:
        raise AssertionError("QMoE needs whole blocks; the exporter zero-pads the experts to them")
    return quantize(w, spec, scale_dtype)


def qmoe_pack(b: Blocks, spec: QuantSpec) -> dict[str, np.ndarray]:
    rows = b.q.shape[0]
    out = {"weights": pack_values(b.q.reshape(rows, -1), spec.bits), "scales": b.scales}
    if b.zero_points is not None:
        out["zero_points"] = pack_nibbles(b.zero_points) if spec.bits == 4 else b.zero_points
    return out
