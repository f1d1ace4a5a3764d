"""The decoder graph of one artifact, ready to run with IO binding.

Loading validates in order of cost (Artifact.open): the manifest (typed, format version, files
present at their recorded sizes), optionally every file's hash, then the graph itself (it must
parse, and its inputs and outputs must be the manifest's). Each failure is one clear error.
"""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort

from zaya_edge.artifact import Artifact
from zaya_edge.ort_session import run_failure


class DecoderSession:
    """The session plus the artifact facts the batch needs (dims, context, logits layout)."""

    def __init__(
        self,
        artifact: Artifact | str | os.PathLike,
        *,
        threads: int | None = None,
        provider: str = "cpu",
        verify: bool = False,
        custom_ops: str | bool | None = None,
    ):
        start = time.perf_counter()
        if not isinstance(artifact, Artifact):
            artifact = Artifact.open(artifact, verify=verify)
        elif verify:
            artifact.verify()
        self.artifact = artifact
        self.folder = artifact.folder
        self.manifest = artifact.manifest
        self.dims = artifact.dims
        opened = artifact.open_session(threads=threads, provider=provider, custom_ops=custom_ops)
        self.session = opened.session
        self.provider = opened.provider
        self.custom_ops_library = opened.custom_ops_library
        self.load_seconds = time.perf_counter() - start

    @property
    def uses_native_kernels(self) -> bool:
        return self.custom_ops_library is not None

    def io_binding(self) -> ort.IOBinding:
        return self.session.io_binding()

    def run(self, binding: ort.IOBinding) -> None:
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:  # onnxruntime's Fail, InvalidArgument, RuntimeException, ...
            raise run_failure(exc, self.artifact) from None

    def run_feeds(self, feed: dict) -> list:
        """A plain `session.run(None, feed)` (quality, the HF adapter), with the same error rule."""
        try:
            return self.session.run(None, feed)
        except Exception as exc:  # onnxruntime's Fail, InvalidArgument, RuntimeException, ...
            raise run_failure(exc, self.artifact) from None


def bind(binding: ort.IOBinding, name: str, array: np.ndarray, output: bool = False) -> None:
    """Bind a C-contiguous numpy array (or a contiguous prefix view) without copying it."""
    if not array.flags.c_contiguous:  # a bug in the caller: binding must never copy silently
        raise AssertionError(f"{name} is not contiguous")
    fn = binding.bind_output if output else binding.bind_input
    fn(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
