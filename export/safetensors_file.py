"""The safetensors files of a checkpoint folder, read one tensor at a time, trusting nothing.

The header is checked before any tensor is read: a bounded length, a JSON object, and every
tensor inside the data section at dtype × shape bytes without overlapping another. Weights must
be finite floats; integer tensors and NaN/Inf values are refused naming the tensor.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from zaya_edge.errors import CheckpointError
from zaya_edge.typed_json import json_object

# safetensors' numpy backend cannot return bf16 (numpy has no such dtype) and its torch
# backend would make torch a hard requirement for reading. The format is a little-endian u64
# header length, a JSON header of {name: {dtype, shape, data_offsets}}, then raw bytes, so we
# read the bytes of one tensor (or a row range of it) and convert bf16 to fp32 ourselves (the
# top 16 bits of an fp32).
FLOAT_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
               "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
HEADER_LIMIT = 100 << 20  # bytes of a JSON header: past any real checkpoint's

_READ_VALUES = 1 << 24  # values per read: 32-64 MB of raw bytes in flight


def finite(name: str, values: np.ndarray) -> np.ndarray:
    """A NaN or Inf weight poisons every logit downstream: refuse it where it is read."""
    if not np.isfinite(values).all():
        raise CheckpointError(f"tensor {name} holds NaN or infinite values")
    return values


def not_float(name: str, dtype: str) -> str:
    """The refusal of an integer (or other non-float) weight: the graph computes in floats."""
    return f"tensor {name} has dtype {dtype}: only floating weights ({', '.join(FLOAT_DTYPES)}) can be exported"


def _widen(raw: np.ndarray, dtype: str, out: np.ndarray) -> None:
    """raw values -> fp32 into `out` (bf16 is the top half of an fp32)."""
    if dtype == "BF16":
        wide = out.view(np.uint32)
        wide[...] = raw
        wide <<= 16
    else:
        out[...] = raw


def _counts(value, length: int | None = None) -> bool:
    """A JSON list of non-negative integers (of `length` items when given)."""
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(type(v) is int and v >= 0 for v in value))


def _check_layout(entries: dict, data_bytes: int, file: str) -> None:
    """Every tensor lies inside the data section, holds dtype × shape bytes, overlaps no other:
    the offsets come from the file, and a reader that trusted them would read anything."""
    spans = []
    for name, e in entries.items():
        if not (isinstance(e, dict) and isinstance(e.get("dtype"), str) and e["dtype"] in _ITEM_BYTES
                and _counts(e.get("shape"))
                and _counts(e.get("data_offsets"), 2)):
            raise CheckpointError(f"{file}: tensor {name} has a malformed header entry {e!r:.200}")
        start, end = e["data_offsets"]
        if not start <= end <= data_bytes:
            raise CheckpointError(f"{file}: tensor {name} has offsets {[start, end]} outside the file's "
                                  f"{data_bytes} data bytes")
        need = math.prod(e["shape"]) * _ITEM_BYTES[e["dtype"]]
        if end - start != need:
            raise CheckpointError(f"{file}: tensor {name} spans {end - start} bytes, its dtype "
                                  f"{e['dtype']} and shape {e['shape']} need {need}")
        if end > start:
            spans.append((start, end, name))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{file}: tensors {a} and {b} overlap")


def _read_header(path: Path, file: str) -> tuple[dict, int]:
    """(tensor entries, offset of the data section) of a safetensors file, checked."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 <= n <= min(HEADER_LIMIT, size - 8):
                raise CheckpointError(
                    f"{file} is not a safetensors file: header length {n} of a {size}-byte file "
                    f"(at most the file and {HEADER_LIMIT >> 20} MiB)"
                )
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file: {exc}") from None
    header = json_object(raw, f"the safetensors header of {file}", CheckpointError)
    header.pop("__metadata__", None)
    _check_layout(header, size - 8 - n, file)
    return header, 8 + n


class SafetensorsFile:
    """One safetensors file whose header was checked; tensors are read as fp32, one at a time."""

    def __init__(self, path: Path, file: str):
        self.path, self.file = path, file  # the real path; the name the checkpoint gives it
        self.entries, self.data_start = _read_header(path, file)

    def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        """fp32 values of one tensor, or of rows [start, stop) of its first axis."""
        e = self.entries[name]
        np_dtype = FLOAT_DTYPES.get(e["dtype"])
        if np_dtype is None:
            raise CheckpointError(not_float(name, e["dtype"]))
        shape = list(e["shape"])
        start, end = e["data_offsets"]
        itemsize = np.dtype(np_dtype).itemsize
        count = (end - start) // itemsize
        if rows is not None:
            row = count // shape[0] if shape[0] else 0
            start += rows[0] * row * itemsize
            shape[0] = rows[1] - rows[0]
            count = shape[0] * row
        # plain reads into one fp32 buffer: a memory map would add the raw bytes to the RSS
        out = np.empty(count, np.float32)
        buf = np.empty(min(count, _READ_VALUES), np_dtype)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + start)
            for i in range(0, count, _READ_VALUES):
                chunk = buf[: min(_READ_VALUES, count - i)]
                if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                    raise CheckpointError(f"{self.file} is truncated: tensor {name} runs past its end")
                _widen(chunk, e["dtype"], out[i : i + len(chunk)])
                finite(name, out[i : i + len(chunk)])  # per chunk: a small temporary
        return out.reshape(shape)
