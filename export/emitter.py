"""A thin layer over onnx-ir's Tape: path-named nodes, shared constants, lazy weights.

Node names are paths (`/model/layers.3/attn/qkv/MatMul`) and outputs are `{node}/output_{k}`,
as in the onnxruntime-genai builder, so a graph can be grepped. Weights are `LazyTensor`s:
nothing is read from the checkpoint until the saver asks for that tensor's bytes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

INT64_MAX = np.iinfo(np.int64).max
F32_MIN = float(np.finfo(np.float32).min)  # a masked score: finite, so nothing turns NaN
FLOAT = ir.DataType.FLOAT


class Emitter:
    def __init__(self) -> None:
        self.tape = ir.tape.Tape()
        self._constants: dict[tuple, ir.Value] = {}
        self._names: set[str] = set()

    # ---- values ---------------------------------------------------------------------------
    def const(self, value, dtype=None) -> ir.Value:
        """A small constant, created once per (dtype, value) and reused."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._constants:
            flat = "_".join(str(v) for v in arr.reshape(-1)[:8])
            name = f"/model/constants/{arr.dtype.name}/{list(arr.shape)}/{flat}"
            self._constants[key] = self.tape.initializer(ir.tensor(arr, name=name), name=name)
        return self._constants[key]

    def i64(self, value) -> ir.Value:
        """An int64 constant: the shapes, axes and indices most ops take."""
        return self.const(np.asarray(value, np.int64))

    def weight(self, name: str, dtype: ir.DataType, shape: tuple[int, ...], produce: Callable[[], np.ndarray]) -> ir.Value:
        """An initializer whose bytes come from `produce()` only when it is written out."""

        def materialize() -> ir.TensorProtocol:
            arr = produce()
            if tuple(arr.shape) != tuple(shape):  # a bug in a transform, not user input
                raise AssertionError(f"{name}: produced {arr.shape}, declared {shape}")
            return ir.tensor(arr, dtype=dtype, name=name)

        lazy = ir.LazyTensor(materialize, dtype=dtype, shape=ir.Shape(shape), name=name)
        return self.tape.initializer(lazy, name=name)

    def eager_weight(self, name: str, arr: np.ndarray) -> ir.Value:
        return self.tape.initializer(ir.tensor(arr, name=name), name=name)

    # ---- nodes ----------------------------------------------------------------------------
    def op(self, op_type: str, path: str, inputs, attrs=None, domain: str = "", outputs: int = 1):
        """Emit one node named `path/op_type`; returns its output value(s)."""
        node_name = f"{path}/{op_type}"
        if node_name in self._names:
            raise AssertionError(f"duplicate node name {node_name}")  # never skip silently
        self._names.add(node_name)
        values = self.tape.op_multi_out(
            op_type, list(inputs), attrs, num_outputs=outputs, domain=domain, name=node_name
        )
        for k, v in enumerate(values):
            v.name = f"{node_name}/output_{k}"
        return values[0] if outputs == 1 else tuple(values)

    def rename(self, value: ir.Value, name: str) -> ir.Value:
        value.name = name
        return value
