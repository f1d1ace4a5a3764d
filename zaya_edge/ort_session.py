"""One way to make an onnxruntime session over an artifact's graph, for every caller.

The runtime, quality, bench and the tests all come through here, so each gets the same
session: the pinned optimisation level, the native ai.zaya kernels when built (or the function
fallback when `custom_ops=False`), and the graph's inputs/outputs checked against the manifest.
"""

from __future__ import annotations

import dataclasses

import onnxruntime as ort

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError, RequestError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "rocm": "ROCMExecutionProvider"}


@dataclasses.dataclass
class OrtDecoderSession:
    session: ort.InferenceSession
    provider: str
    custom_ops_library: object | None  # custom_ops.LibraryInfo when the native kernels are registered


def _register_custom_ops(options: ort.SessionOptions, path: str | None):
    """Register the native ai.zaya kernels when built; None means the function fallback runs."""
    from zaya_edge import custom_ops

    return custom_ops.register(options, path)


def session_options(threads: int | None, custom_ops: str | bool | None):
    if threads is not None and threads < 1:
        raise RequestError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # the default, pinned: below ALL, QMoE does not get its scales as constant initializers at
    # prepack time and falls back to dequantize + SGEMM (decode 12x slower, BENCHMARKS.md)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    library = None
    if custom_ops is not False:
        library = _register_custom_ops(options, custom_ops if isinstance(custom_ops, str) else None)
    return options, library


def open_decoder_session(artifact: "A.Artifact", *, threads: int | None = None, provider: str = "cpu",
                         custom_ops: str | bool | None = None) -> OrtDecoderSession:
    if provider not in PROVIDERS:
        raise RequestError(f"unknown execution provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if PROVIDERS[provider] not in ort.get_available_providers():
        raise RequestError(f"this onnxruntime build has no {PROVIDERS[provider]}")
    options, library = session_options(threads, custom_ops)
    model = artifact.path(A.MODEL_FILE)
    try:
        session = ort.InferenceSession(str(model), options, providers=[PROVIDERS[provider]])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"cannot load {A.MODEL_FILE} from {artifact.folder} (corrupt or incompatible): {first}") from None
    _check_io(session, artifact.manifest)
    return OrtDecoderSession(session, provider, library)


def _check_io(session: ort.InferenceSession, manifest) -> None:
    graph_in = {i.name: len(i.shape) for i in session.get_inputs()}
    graph_out = {o.name: len(o.shape) for o in session.get_outputs()}
    for kind, declared, actual in (("input", manifest.inputs, graph_in), ("output", manifest.outputs, graph_out)):
        want = {spec.name: len(spec.shape) for spec in declared}
        if want != actual:
            missing = sorted(set(want) - set(actual)) or sorted(n for n in want if want[n] != actual.get(n))
            extra = sorted(set(actual) - set(want))
            detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            raise ArtifactError(f"graph {kind}s do not match the manifest ({detail}): artifact is inconsistent")
