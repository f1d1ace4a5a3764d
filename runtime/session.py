"""One onnxruntime session over an artifact, checked against its manifest before use.

Loading validates in order of cost: the manifest (format version, files present at their
recorded sizes), optionally every file's hash, then the graph itself (it must parse, and its
inputs and outputs must be the manifest's). Each failure is one clear ZayaEdgeError.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from zaya_edge import artifact as A
from zaya_edge.errors import ZayaEdgeError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "rocm": "ROCMExecutionProvider"}


def _register_custom_ops(options: ort.SessionOptions, path: str | None):
    """Register the native ai.zaya kernels when built; None means the function fallback runs."""
    try:
        from zaya_edge import custom_ops
    except ImportError:
        return None
    return custom_ops.register(options, path)


class DecoderSession:
    """The decoder graph, ready to run with IO binding."""

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        threads: int | None = None,
        provider: str = "cpu",
        verify: bool = False,
        custom_ops: str | bool | None = None,
    ):
        start = time.perf_counter()
        self.folder = Path(folder)
        self.manifest = A.read_manifest(self.folder)
        if verify:
            A.verify_hashes(self.folder, self.manifest)
        self.dims = self.manifest.model_dims
        if provider not in PROVIDERS:
            raise ZayaEdgeError(f"unknown execution provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise ZayaEdgeError(f"this onnxruntime build has no {PROVIDERS[provider]}")
        if threads is not None and threads < 1:
            raise ZayaEdgeError(f"threads must be >= 1, got {threads}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # the default, pinned: below ALL, QMoE does not get its scales as constant initializers at
        # prepack time and falls back to dequantize + SGEMM (decode 12x slower, BENCHMARKS.md)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.custom_ops_library = None
        if custom_ops is not False:
            self.custom_ops_library = _register_custom_ops(options, custom_ops if isinstance(custom_ops, str) else None)
        try:
            self.session = ort.InferenceSession(str(self.folder / A.MODEL_FILE), options, providers=[PROVIDERS[provider]])
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ZayaEdgeError(f"cannot load {A.MODEL_FILE} from {self.folder} (corrupt or incompatible): {first}") from None
        self._check_io()
        self.provider = provider
        self.load_seconds = time.perf_counter() - start

    def _check_io(self) -> None:
        graph_in = {i.name: len(i.shape) for i in self.session.get_inputs()}
        graph_out = {o.name: len(o.shape) for o in self.session.get_outputs()}
        for kind, declared, actual in (("input", self.manifest.inputs, graph_in), ("output", self.manifest.outputs, graph_out)):
            want = {name: len(shape) for name, _, shape in declared}
            if want != actual:
                missing = sorted(set(want) - set(actual)) or sorted(n for n in want if want[n] != actual.get(n))
                extra = sorted(set(actual) - set(want))
                detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
                raise ZayaEdgeError(f"graph {kind}s do not match the manifest ({detail}): artifact is inconsistent")

    @property
    def uses_native_kernels(self) -> bool:
        return self.custom_ops_library is not None

    def io_binding(self) -> ort.IOBinding:
        return self.session.io_binding()

    def run(self, binding: ort.IOBinding) -> None:
        self.session.run_with_iobinding(binding)


def bind(binding: ort.IOBinding, name: str, array: np.ndarray, output: bool = False) -> None:
    """Bind a C-contiguous numpy array (or a contiguous prefix view) without copying it."""
    if not array.flags.c_contiguous:  # a bug in the caller: binding must never copy silently
        raise AssertionError(f"{name} is not contiguous")
    fn = binding.bind_output if output else binding.bind_input
    fn(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
