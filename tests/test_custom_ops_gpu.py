"""The CUDA / ROCm Router kernels equal the CPU function body (needs a GPU, onnxruntime-gpu and
custom_ops/build-cuda or build-hip; skipped elsewhere).

    ZAYA_EDGE_CUSTOM_OPS=custom_ops/build-cuda/libzaya_custom_ops.so pytest tests/test_custom_ops_gpu.py
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_ir")

from test_custom_ops_router import OUTPUT_NAMES, TOL, biased_margin, random_feeds, router_model  # noqa: E402

from zaya_edge import custom_ops  # noqa: E402

GPU_PROVIDERS = [p for p in ("CUDAExecutionProvider", "ROCMExecutionProvider") if p in ort.get_available_providers()]
LIB = custom_ops.library_info() if custom_ops.find_library() else None
GPU = next((p for p in GPU_PROVIDERS if LIB is not None and p in LIB.providers), None)
if GPU is None:
    pytest.skip(
        f"no GPU Router kernel to run (onnxruntime providers {ort.get_available_providers()}, "
        f"library kernels {LIB.providers if LIB else None}): build custom-ops-cuda / custom-ops-hip on a GPU machine",
        allow_module_level=True,
    )


def _sessions(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    fallback = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    custom_ops.register(so, LIB.path)
    native = ort.InferenceSession(model, so, providers=[GPU, "CPUExecutionProvider"])
    assert custom_ops.router_path(native).provider == GPU
    return fallback, native


@pytest.fixture(scope="module")
def sessions():
    return _sessions(router_model())


CASES = [
    (dims, n, layer, skip)
    for dims, lengths in (("tiny", (1, 2, 7, 64, 512)), ("zaya1_8b", (1, 3, 64, 512)))
    for n in lengths
    for layer in ("first", "later", "later_broadcast")
    for skip in ("mixed", "all", "none")
]


@pytest.mark.parametrize("dims,n,layer,skip", CASES)
def test_gpu_kernel_equals_function_body(sessions, dims, n, layer, skip):
    fallback, native = sessions
    feeds = random_feeds(np.random.default_rng(), n, dims, layer, skip)
    before = custom_ops.native_counters(LIB.path)["computes"][GPU]
    want = fallback.run(None, feeds)
    got = native.run(None, feeds)
    assert custom_ops.native_counters(LIB.path)["computes"][GPU] == before + 1, "the GPU kernel did not run"
    chosen_w = np.where(want[2].sum(-1) > 0, want[1].argmax(-1), -1)
    chosen_g = np.where(got[2].sum(-1) > 0, got[1].argmax(-1), -1)
    differ = np.flatnonzero(chosen_w != chosen_g)
    assert (biased_margin(feeds)[differ] < 1e-5).all(), f"expert choice differs at {differ}"
    same = np.setdiff1d(np.arange(n), differ)
    for name, w, g in zip(OUTPUT_NAMES, want, got):
        assert w.shape == g.shape, name
        rows = slice(None) if name == "state" else same
        assert np.abs(w[rows] - g[rows]).max(initial=0) <= TOL, name


def test_gpu_weights_as_initializers():
    feeds = random_feeds(np.random.default_rng(), 37, "zaya1_8b", "later", "mixed")
    weights = {k: v for k, v in feeds.items() if k not in ("x", "prev_state")}
    fallback, native = _sessions(router_model(weights=weights))
    small = {"x": feeds["x"], "prev_state": feeds["prev_state"]}
    want, got = fallback.run(None, small), native.run(None, small)
    assert np.abs(want[0] - got[0]).max() <= TOL
