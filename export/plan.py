"""What an export was asked for, checked once before any weight is read.

`plan_export` turns the user's arguments and the checkpoint's dims into one frozen `ExportPlan`;
the graph builder and the writer read only the plan. Its `record()` becomes the manifest's
`quantization` dict, so a runtime (or a person) can tell how an artifact was made without
opening the graph.

Messages name the library's arguments (`block_size=64`), never CLI flags: the CLI adds those.
"""

from __future__ import annotations

import dataclasses

from zaya_edge.artifact import EXPERTS_FUSED, EXPERTS_PORTABLE
from zaya_edge.config import ZayaDims
from zaya_edge.errors import CheckpointError, RequestError

from .options import (
    BLOCK_SIZES,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_FUSED_MOE,
    DEFAULT_KV_CACHE,
    KV_CACHES,
    DEFAULT_METHOD,
    METHODS,
    PRECISIONS,
    QUANT_BITS,
    TABLE_PRECISIONS,
)
from .experts import LEARNED
from .quant import QuantSpec
from .moe_op import fusable
from .quant_layers import ACCURACY_LEVEL, SCALE_DTYPE, padded
from .rope import check_rope


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """Everything an export was asked for, checked: what the graph builder and the writer read."""

    precision: str
    quant: QuantSpec | None  # None: fp32 weights everywhere
    lm_head_bits: int | None  # bits of the (tied) embedding/lm_head table; None for fp32
    all_logits: bool  # logits for every position, not only the last
    context_length: int  # rows of the RoPE cache: the longest context the artifact supports
    padded: str | None = None  # the sizes whose last quantization block is zero-padded, if any
    fused_moe: bool = False  # experts as ai.zaya::ExpertMoE (native kernel; function body = the portable graph)
    kv_dtype: str = "float32"  # the key/value cache's numpy dtype name

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
            **({"padded_blocks": self.padded} if self.padded else {}),
            "experts": EXPERTS_FUSED if self.fused_moe else EXPERTS_PORTABLE,
        }


def plan_export(dims: ZayaDims, *, precision: str, block_size: int | None, asymmetric: bool, lm_head: str | None,
                quant_method: str | None, all_logits: bool, context_length: int | None,
                kv_cache: str | None = None, fused_moe: bool | None = None) -> ExportPlan:
    """The checked plan of export_model's arguments (None: the default); raises RequestError
    naming the first argument that cannot work. fused_moe applies where the native expert kernel
    covers the export (int4, symmetric, an activation it implements); elsewhere the portable graph."""
    if precision not in PRECISIONS:
        raise RequestError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if context_length is not None and context_length < 1:
        raise RequestError(f"context_length={context_length} is not positive")
    length = context_length or dims.max_position_embeddings
    if length < 1:
        raise RequestError(f"max_position_embeddings is {dims.max_position_embeddings}: give a context_length")
    check_exportable(dims, length)
    kv_cache = kv_cache or DEFAULT_KV_CACHE[precision]
    if kv_cache not in KV_CACHES:
        raise RequestError(f"unknown kv_cache {kv_cache!r}; choose one of {', '.join(KV_CACHES)}")
    kv_dtype = KV_CACHES[kv_cache]
    if precision == "fp32":
        _refuse_quant_options(block_size=block_size, asymmetric=asymmetric or None, lm_head=lm_head,
                              quant_method=quant_method)
        return ExportPlan("fp32", None, None, all_logits, length, kv_dtype=kv_dtype)
    spec = _quant_spec(precision, block_size, asymmetric, quant_method)
    table = lm_head or precision
    if table not in TABLE_PRECISIONS:
        raise RequestError(f"unknown lm_head precision {table!r}; choose one of {', '.join(TABLE_PRECISIONS)}")
    fused = (DEFAULT_FUSED_MOE if fused_moe is None else bool(fused_moe)) and fusable(
        dims.hidden_act, spec.bits, spec.symmetric, (dims.hidden_size, dims.moe_intermediate_size), spec.block_size)
    return ExportPlan(precision, spec, QUANT_BITS[table], all_logits, length, _padding(dims, spec.block_size), fused,
                      kv_dtype)


def _refuse_quant_options(**given) -> None:
    named = [f"{name}={value!r}" for name, value in given.items() if value is not None]
    if named:
        raise RequestError(f"{', '.join(named)} only apply to int4/int8 exports, not fp32")


def _quant_spec(precision: str, block_size: int | None, asymmetric: bool, quant_method: str | None) -> QuantSpec:
    block = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
    if block not in BLOCK_SIZES:
        raise RequestError(f"block size {block} is not supported; choose one of {', '.join(map(str, BLOCK_SIZES))}")
    method = quant_method or DEFAULT_METHOD
    if method not in METHODS:
        raise RequestError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    return QuantSpec(bits=QUANT_BITS[precision], block_size=block, symmetric=not asymmetric, method=method)


def check_exportable(dims: ZayaDims, length: int) -> None:
    """What transformers builds but zaya-edge cannot export; RoPE computable over `length` positions."""
    if dims.hidden_act in LEARNED:
        raise CheckpointError(f"hidden_act {dims.hidden_act!r} has learned parameters of its own, which the "
                              "exporter does not carry; it exports every parameter-free activation")
    if dims.router_hidden_size == 0:
        raise CheckpointError("router_hidden_size=0 (a router with no hidden units) cannot be exported")
    check_rope(dims, length)


def _padding(dims: ZayaDims, block: int) -> str | None:
    """The matmul widths (K) the block does not divide: their last block is zero-padded."""
    sizes = {"hidden_size": dims.hidden_size, "moe_intermediate_size": dims.moe_intermediate_size,
             "num_attention_heads * head_dim": dims.num_heads * dims.head_dim}
    odd = [f"{name} {size} -> {padded(size, block)}" for name, size in sizes.items() if size % block]
    return ", ".join(odd) + f" (block {block}; zero-padded)" if odd else None
