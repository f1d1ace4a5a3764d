"""The choices an export offers, and their defaults.

Plain constants with no import of the export extra, so the CLI can list them in its help (and
check them with click) where torch and onnx-ir are not installed; plan.py validates against them.
"""

from __future__ import annotations

from zaya_edge.artifact import PRECISIONS

DEFAULT_PRECISION = "int4"  # the point is a model that fits a laptop; fp32 is the exact reference
QUANT_BITS = {"int4": 4, "int8": 8}  # the quantized precisions and their bits
TABLE_PRECISIONS = tuple(QUANT_BITS)  # what the (tied) embedding/lm_head table may be stored in

# Weights per quantization block: the sizes onnxruntime's MatMulNBits, QMoE and
# GatherBlockQuantized kernels take.
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32

METHODS = ("rtn", "mse")  # round to nearest; a per-block clipping search (quant.py)
DEFAULT_METHOD = "mse"  # lower KL than rtn at int4 on the tiny models (benchmarks/quant_methods.py)

# The key/value cache's dtype: fp16 halves the bytes a long-context decode step reads, for a
# logit change far below int4's (BENCHMARKS.md, "KV cache"); fp32 exports stay exact references.
KV_CACHES = {"fp16": "float16", "fp32": "float32"}
DEFAULT_KV_CACHE = {"int4": "fp16", "int8": "fp16", "fp32": "fp32"}

# int4 experts as one ai.zaya::ExpertMoE node per layer (native kernel on the stored blocks, function
# body = the portable QMoE / MatMulNBits graph); --portable exports the stock graph. On by default:
# the body is the portable graph (same results on stock onnxruntime, same stored bytes), and the
# native kernel measured faster and smaller (BENCHMARKS.md: decode 1.1-1.4x, prefill 1.1-1.7x,
# 1.31x instead of 1.84x the expert bytes resident).
DEFAULT_FUSED_MOE = True

__all__ = [
    "BLOCK_SIZES", "DEFAULT_BLOCK_SIZE", "DEFAULT_FUSED_MOE", "DEFAULT_KV_CACHE", "DEFAULT_METHOD", "KV_CACHES",
    "DEFAULT_PRECISION", "METHODS", "PRECISIONS",
    "QUANT_BITS", "TABLE_PRECISIONS",
]
