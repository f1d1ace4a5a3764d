"""One way to make an onnxruntime session over an artifact's graph, for every caller.

The runtime, quality, bench and the tests all come through here, so each gets the same
session: the pinned optimisation level, the native ai.zaya kernels when built (or the function
fallback when `custom_ops=False`), and the graph's inputs/outputs checked against the manifest.
"""

from __future__ import annotations

import dataclasses

import onnxruntime as ort

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError, RequestError, first_line

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
    options.log_severity_level = 4  # fatal only: a failing run becomes our own one-line error (run_failure)
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
        first = first_line(exc)
        raise ArtifactError(f"cannot load {A.MODEL_FILE} from {artifact.folder} (corrupt or incompatible): {first}") from None
    _check_io(session, artifact.manifest)
    return OrtDecoderSession(session, provider, library)


def _check_io(session: ort.InferenceSession, manifest) -> None:
    """The graph's inputs and outputs are the manifest's: names, then each one's dtype and static dims.

    The manifest is checked against its own dims when parsed; this holds it to the graph too, so a
    manifest edited consistently (dims and IO together) is refused at load, not at the first step.
    """
    for kind, declared, args in (("input", manifest.inputs, session.get_inputs()),
                                 ("output", manifest.outputs, session.get_outputs())):
        graph = {a.name: a for a in args}
        want = {spec.name: spec for spec in declared}
        missing, extra = sorted(set(want) - set(graph)), sorted(set(graph) - set(want))
        if missing or extra:
            detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            raise ArtifactError(f"graph {kind}s do not match the manifest ({detail}): artifact is inconsistent")
        for spec in declared:
            arg = graph[spec.name]
            if not _same_tensor(spec, arg.type, arg.shape):
                raise ArtifactError(
                    f"graph {kind} {spec.name} is {spec.dtype} {list(spec.shape)} in the "
                    f"manifest but {arg.type} {list(arg.shape)} in {A.MODEL_FILE}: artifact is inconsistent")


_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "bfloat16": "tensor(bfloat16)",
              "int64": "tensor(int64)", "int32": "tensor(int32)", "int8": "tensor(int8)", "uint8": "tensor(uint8)",
              "bool": "tensor(bool)"}


def _same_tensor(spec, graph_type: str, graph_shape) -> bool:
    """Same element type and rank, and every dim that either side fixes to a number is that number."""
    if _ORT_TYPES.get(spec.dtype) != graph_type or len(spec.shape) != len(graph_shape):
        return False
    return all(m == g for m, g in zip(spec.shape, graph_shape) if isinstance(m, int) or isinstance(g, int))


def run_failure(exc: Exception, artifact) -> ArtifactError:
    """onnxruntime failing inside a run of a graph that loaded and matched its manifest means the
    artifact promised more than its graph holds (e.g. a context longer than its RoPE tables):
    one line naming the artifact, not onnxruntime's traceback."""
    return ArtifactError(f"the graph of {artifact.folder} failed while running ({first_line(exc)}): "
                         "the artifact does not hold what its manifest says; re-export it")
