"""What `--precision` and the quantization options mean, checked once before anything is read.

The result also becomes the manifest's `quantization` record, so a runtime (or a person) can
tell how an artifact was made without opening the graph.
"""

from __future__ import annotations

import dataclasses

from zaya_edge import artifact as A
from zaya_edge.config import ZayaDims
from zaya_edge.errors import ZayaEdgeError

from .quant import BLOCK_SIZES, METHODS, QuantSpec
from .quant_layers import ACCURACY_LEVEL, SCALE_DTYPE

DEFAULT_PRECISION = "int4"
DEFAULT_BLOCK_SIZE = 32
DEFAULT_METHOD = "mse"  # lower KL than rtn at int4 on the tiny models (benchmarks/quant_methods.py)
TABLE_PRECISIONS = ("int4", "int8")
_BITS = {"int4": 4, "int8": 8}


@dataclasses.dataclass(frozen=True)
class Precision:
    name: str
    quant: QuantSpec | None
    lm_head_bits: int | None

    def record(self) -> dict:
        """The manifest's `quantization` dict ({} for fp32)."""
        if self.quant is None:
            return {}
        q = self.quant
        return {
            "method": q.method,
            "bits": q.bits,
            "block_size": q.block_size,
            "symmetric": q.symmetric,
            "lm_head_bits": self.lm_head_bits,
            "tied_table": "one quantized initializer: GatherBlockQuantized (embedding) + MatMulNBits (lm_head)",
            "accuracy_level": ACCURACY_LEVEL,
            "scales": f"{SCALE_DTYPE.__name__} (MatMulNBits reads them through a Cast folded at load)",
            "float_tensors": "router, norms, residual scales, conv kernels, biases: fp32 compute; "
                             "stored in the checkpoint's bf16/fp16 when it has them (exact)",
        }


def resolve(
    precision: str,
    dims: ZayaDims,
    *,
    block_size: int | None = None,
    asymmetric: bool = False,
    lm_head: str | None = None,
    quant_method: str | None = None,
) -> Precision:
    if precision not in A.PRECISIONS:
        raise ZayaEdgeError(f"unknown precision {precision!r}; choose one of {', '.join(A.PRECISIONS)}")
    if precision == "fp32":
        options = (("--block-size", block_size), ("--asymmetric", asymmetric or None),
                   ("--lm-head", lm_head), ("--quant-method", quant_method))
        given = [flag for flag, value in options if value is not None]
        if given:
            raise ZayaEdgeError(f"{', '.join(given)} only apply to int4/int8 exports, not fp32")
        return Precision("fp32", None, None)
    block = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
    if block not in BLOCK_SIZES:
        raise ZayaEdgeError(f"block size {block} is not supported; choose one of {', '.join(map(str, BLOCK_SIZES))}")
    method = quant_method or DEFAULT_METHOD
    if method not in METHODS:
        raise ZayaEdgeError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    table = lm_head or precision
    if table not in TABLE_PRECISIONS:
        raise ZayaEdgeError(f"unknown lm-head precision {table!r}; choose one of {', '.join(TABLE_PRECISIONS)}")
    for what, size in (("hidden_size", dims.hidden_size), ("moe_intermediate_size", dims.moe_intermediate_size)):
        if size % block:
            raise ZayaEdgeError(
                f"block size {block} does not divide {what} {size}: the experts (QMoE) and the embedding "
                "table need whole blocks; choose a smaller --block-size"
            )
    spec = QuantSpec(bits=_BITS[precision], block_size=block, symmetric=not asymmetric, method=method)
    return Precision(precision, spec, _BITS[table])
