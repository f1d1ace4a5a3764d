"""The whole exported tiny model gives the same logits with the native Router as without it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from ort_decoder import OrtDecoder  # noqa: E402

from zaya_edge import custom_ops  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import tiny_model  # noqa: E402

LIB = custom_ops.library_info() if custom_ops.find_library() else None
pytestmark = pytest.mark.skipif(LIB is None, reason="custom-op library not built (make custom-ops)")

TOL = 1e-5


def _decoders(model, folder, **export_options):
    """(fallback, native) drivers over one artifact."""
    export_model(model, folder, progress=False, all_logits=True, **{"precision": "fp32", **export_options})
    fallback = OrtDecoder(folder)
    native = OrtDecoder(folder, custom_ops=str(LIB.path))
    assert not custom_ops.router_path(fallback.session).native
    assert custom_ops.router_path(native.session).native
    return fallback, native


def _run_both(fallback, native, ids, mask, states):
    before = custom_ops.native_counters(LIB.path)["computes"]["CPUExecutionProvider"]
    want = fallback.step(ids, mask, states[0])
    got = native.step(ids, mask, states[1])
    after = custom_ops.native_counters(LIB.path)["computes"]["CPUExecutionProvider"]
    assert after - before == native.dims.num_layers, "the native Router did not run in every layer"
    assert np.abs(want[0] - got[0]).max() <= TOL
    for name, value in want[1].items():
        assert np.abs(value - got[1][name]).max() <= TOL, name
    return want, got


@pytest.mark.parametrize("skip_bias", [None, 0.3], ids=["some_tokens_skip", "all_tokens_skip"])
def test_tiny_model_native_equals_fallback(tmp_path, skip_bias):
    model = tiny_model(seed=11)
    if skip_bias is not None:
        for layer in model.model.layers:
            layer.mlp.gate.balancing_biases[-1] = skip_bias
    fallback, native = _decoders(model, tmp_path / "art")
    rng = np.random.default_rng()
    vocab = model.config.vocab_size
    # left-padded batch of 3 prompts, then 8 decode steps
    lengths = (13, 5, 9)
    width = max(lengths)
    ids = np.zeros((3, width), np.int64)
    mask = np.zeros((3, width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rng.integers(4, vocab, n)
        mask[row, width - n:] = 1
    want, got = _run_both(fallback, native, ids, mask, (fallback.zero_state(3), native.zero_state(3)))
    states = (want[1], got[1])
    for _ in range(8):
        nxt = rng.integers(4, vocab, (3, 1))
        mask = np.concatenate([mask, np.ones((3, 1), np.int64)], 1)
        want, got = _run_both(fallback, native, nxt, mask, states)
        states = (want[1], got[1])


def test_long_prefill(tmp_path):
    model = tiny_model(seed=12)
    fallback, native = _decoders(model, tmp_path / "art")
    rng = np.random.default_rng()
    ids = rng.integers(4, model.config.vocab_size, (1, 300))
    _run_both(fallback, native, ids, np.ones_like(ids), (fallback.zero_state(1), native.zero_state(1)))


def test_int4_artifact(tmp_path, monkeypatch):
    """Quantized artifacts keep the fp32 Router: same agreement around MatMulNBits and QMoE.

    Exported with accuracy_level 0: the default 4 quantizes activations to int8, and a 1e-7
    difference then flips a rounding step now and then (measured: 10 of 100 random prompts differ
    by 1e-4..3e-2 with level 4, none with level 0), which would test the quantizer, not the kernel.
    The cache stays fp32 for the same reason: rounding keys to fp16 turns 1e-7 differences upstream
    into 1e-4 ones (test_kv_cache.py bounds the fp16 cache on its own)."""
    import zaya_edge.export.quant_layers as quant_layers

    monkeypatch.setattr(quant_layers, "ACCURACY_LEVEL", 0)
    model = tiny_model(seed=13)
    fallback, native = _decoders(model, tmp_path / "art", precision="int4", kv_cache="fp32")
    rng = np.random.default_rng()
    ids = rng.integers(4, model.config.vocab_size, (2, 21))
    want, got = _run_both(fallback, native, ids, np.ones_like(ids), (fallback.zero_state(2), native.zero_state(2)))
    nxt = rng.integers(4, model.config.vocab_size, (2, 1))
    _run_both(fallback, native, nxt, np.ones((2, 22), np.int64), (want[1], got[1]))
