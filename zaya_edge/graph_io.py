"""The decoder graph's inputs and outputs: names, dtypes, state shapes (part of the contract).

Names follow onnxruntime-genai's templates so its generator can drive the same graph. Beside
the KV cache every layer carries two small CCA states: the conv window and the delayed value.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from zaya_edge.config import ZayaDims

__all__ = [
    "INPUT_IDS", "ATTENTION_MASK", "LOGITS", "PAST_KEY", "PAST_VALUE", "PAST_CONV", "PAST_RECURRENT",
    "PRESENT_KEY", "PRESENT_VALUE", "PRESENT_CONV", "PRESENT_RECURRENT", "STATE_KINDS", "PAST_NAMES",
    "PRESENT_NAMES", "KV_DTYPES", "TensorSpec", "state_shape", "io_spec", "zero_state", "next_state",
]

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"
PAST_KEY = "past_key_values.%d.key"
PAST_VALUE = "past_key_values.%d.value"
PAST_CONV = "past_conv.%d"
PAST_RECURRENT = "past_recurrent.%d"
PRESENT_KEY = "present.%d.key"
PRESENT_VALUE = "present.%d.value"
PRESENT_CONV = "present_conv.%d"
PRESENT_RECURRENT = "present_recurrent.%d"

STATE_KINDS = ("key", "value", "conv", "recurrent")
PAST_NAMES = {"key": PAST_KEY, "value": PAST_VALUE, "conv": PAST_CONV, "recurrent": PAST_RECURRENT}
PRESENT_NAMES = {
    "key": PRESENT_KEY,
    "value": PRESENT_VALUE,
    "conv": PRESENT_CONV,
    "recurrent": PRESENT_RECURRENT,
}


def state_shape(dims: ZayaDims, kind: str, batch, length) -> tuple:
    """Shape of one layer's state of `kind`; `length` is the key/value time axis."""
    if kind in ("key", "value"):
        return (batch, dims.num_kv_heads, length, dims.head_dim)
    if kind == "conv":
        return (batch, dims.conv_channels, dims.conv_state_len)
    if kind == "recurrent":
        return (batch, dims.value_half)
    raise ValueError(kind)


class TensorSpec(NamedTuple):
    """One graph input or output; stored in the manifest as a JSON list [name, dtype, shape]."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


KV_DTYPES = ("float32", "float16")  # what the key/value cache may be stored in


def io_spec(dims: ZayaDims, all_logits: bool, kv_dtype: str = "float32") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) as TensorSpecs with symbolic dims as strings.

    Semantics: `attention_mask` is [batch, past + sequence] with 1 for real tokens; every row
    shares the same column positions (left padding and holes are masked, never compacted), so
    the new tokens of all rows go to the same cache columns. The key/value past may be a
    longer preallocated buffer (shared past/present buffer); the mask's width says how much
    of it is in use. Keys and values are stored in `kv_dtype`; every other state is fp32.
    """
    inputs = [
        TensorSpec(INPUT_IDS, "int64", ("batch", "sequence")),
        TensorSpec(ATTENTION_MASK, "int64", ("batch", "total_sequence")),
    ]
    outputs = [TensorSpec(LOGITS, "float32", ("batch", "sequence" if all_logits else 1, dims.vocab_size))]
    for i in range(dims.num_layers):
        for kind in STATE_KINDS:
            dtype = kv_dtype if kind in ("key", "value") else "float32"
            inputs.append(TensorSpec(PAST_NAMES[kind] % i, dtype, state_shape(dims, kind, "batch", "past_sequence")))
            outputs.append(
                TensorSpec(PRESENT_NAMES[kind] % i, dtype, state_shape(dims, kind, "batch", "present_sequence"))
            )
    return inputs, outputs


def zero_state(dims: ZayaDims, batch: int, kv_dtype: str = "float32") -> dict[str, np.ndarray]:
    """Empty past states for `batch` rows, keyed by input name (plain session.run feeds)."""
    return {
        PAST_NAMES[k] % i: np.zeros(state_shape(dims, k, batch, 0), kv_dtype if k in ("key", "value") else np.float32)
        for i in range(dims.num_layers) for k in STATE_KINDS
    }


def next_state(dims: ZayaDims, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A call's present states, keyed as the next call's past inputs (concat-mode cache)."""
    return {PAST_NAMES[k] % i: outputs[PRESENT_NAMES[k] % i] for i in range(dims.num_layers) for k in STATE_KINDS}
