"""The native ai.zaya::Router kernel (custom_ops/) equals its ONNX function body, op alone.

Fresh random inputs each case; shapes from the tiny test model and from ZAYA1-8B (hidden 2048,
router hidden 256, 16 experts + skip), 1..512 tokens, first layer (zero state and scale) and
later layers (per-row or broadcast previous state), all-skip / no-skip / mixed routing.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
ir = pytest.importorskip("onnx_ir")

from zaya_edge import custom_ops  # noqa: E402
from zaya_edge.artifact import ROUTER_OP, ZAYA_DOMAIN  # noqa: E402
from zaya_edge.export.router_op import INPUT_NAMES, OUTPUT_NAMES, router_function  # noqa: E402

LIB = custom_ops.library_info() if custom_ops.find_library() else None
needs_lib = pytest.mark.skipif(LIB is None, reason="custom-op library not built (make custom-ops)")

TOL = 1e-5
EPS = 1e-5
DIMS = {"tiny": (64, 32, 4), "zaya1_8b": (2048, 256, 16)}  # H, R, E


def router_model(epsilon: float = EPS, weights: dict | None = None) -> bytes:
    """A one-node model: ai.zaya::Router with its function body; inputs not in `weights` are graph inputs."""
    weights = weights or {}
    values = {n: ir.val(n, ir.DataType.FLOAT, None) for n in INPUT_NAMES}
    inits = []
    for name, arr in weights.items():
        values[name] = ir.Value(name=name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(arr.shape),
                                const_value=ir.tensor(arr, name=name))
        inits.append(values[name])
    tape = ir.tape.Tape()
    outs = tape.op_multi_out(ROUTER_OP, [values[n] for n in INPUT_NAMES], {"epsilon": epsilon},
                             domain=ZAYA_DOMAIN, num_outputs=3)
    for value, name in zip(outs, OUTPUT_NAMES):
        value.name = name
    graph = ir.Graph([v for n, v in values.items() if n not in weights], list(outs), nodes=tape.nodes,
                     initializers=inits, opset_imports={"": 21, ZAYA_DOMAIN: 1}, name="router")
    model = ir.Model(graph, ir_version=10, functions=[router_function()])
    return ir.serde.serialize_model(model).SerializeToString()


def session(model: bytes, native: bool, providers=("CPUExecutionProvider",), threads: int = 0):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if native:
        custom_ops.register(so, LIB.path)
    return ort.InferenceSession(model, so, providers=list(providers))


def random_weights(rng, h, r, e, first_layer: bool, skip_bias: float) -> dict:
    """Router weights at scales that give spread-out, non-degenerate class probabilities."""
    f = np.float32
    return {
        "down_w": (rng.standard_normal((h, r)) / np.sqrt(h)).astype(f),
        "down_b": (0.05 * rng.standard_normal(r)).astype(f),
        "state_scale": np.zeros(r, f) if first_layer else rng.uniform(0.5, 1.5, r).astype(f),
        "norm_w": rng.uniform(0.8, 1.2, r).astype(f),
        "fc1_w": (2 * rng.standard_normal((r, r)) / np.sqrt(r)).astype(f),
        "fc1_b": (0.05 * rng.standard_normal(r)).astype(f),
        "fc2_w": (2 * rng.standard_normal((r, r)) / np.sqrt(r)).astype(f),
        "fc2_b": (0.05 * rng.standard_normal(r)).astype(f),
        "out_w": (3 * rng.standard_normal((r, e + 1)) / np.sqrt(r)).astype(f),
        "balancing_bias": np.r_[rng.uniform(-0.05, 0.05, e), skip_bias].astype(f),
    }


def random_feeds(rng, n, dims, layer: str, skip: str) -> dict:
    h, r, e = DIMS[dims]
    feeds = random_weights(rng, h, r, e, layer == "first", {"mixed": 0.0, "all": 2.0, "none": -2.0}[skip])
    feeds["x"] = rng.standard_normal((n, h)).astype(np.float32)
    if layer == "first":
        feeds["prev_state"] = np.zeros((1, r), np.float32)
    elif layer == "later":
        feeds["prev_state"] = rng.standard_normal((n, r)).astype(np.float32)
    else:  # "later_broadcast": a [1, R] state shared by every row
        feeds["prev_state"] = rng.standard_normal((1, r)).astype(np.float32)
    if skip == "mixed" and n:  # a skip bias that sends about a third of the tokens to skip,
        p = reference_probs(feeds)  # halfway between two tokens' thresholds (no built-in tie)
        gap = np.sort((p[:, :-1] + feeds["balancing_bias"][:-1]).max(-1) - p[:, -1])
        k = n // 3
        feeds["balancing_bias"][-1] = (gap[k - 1] + gap[k]) / 2 if k else gap[0] - 0.01
    return feeds


def reference_probs(feeds) -> np.ndarray:
    """float64 class probabilities [N, E+1], straight from the operator's definition."""
    f = {k: v.astype(np.float64) for k, v in feeds.items()}
    z = f["x"] @ f["down_w"] + f["down_b"] + f["prev_state"] * f["state_scale"]
    nrm = z / np.sqrt((z * z).mean(-1, keepdims=True) + EPS) * f["norm_w"]
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    h1 = gelu(nrm @ f["fc1_w"] + f["fc1_b"])
    h2 = gelu(h1 @ f["fc2_w"] + f["fc2_b"])
    logits = h2 @ f["out_w"]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def biased_margin(feeds) -> np.ndarray:
    """(best - second best) biased probability per token: a near-tie may flip either way."""
    biased = np.sort(reference_probs(feeds) + feeds["balancing_bias"], axis=-1)
    return biased[:, -1] - biased[:, -2]


@pytest.fixture(scope="module")
def sessions():
    model = router_model()
    if LIB is None:
        pytest.skip("custom-op library not built (make custom-ops)")
    return session(model, native=False), session(model, native=True)


def compare(fallback, native, feeds, allow_ties=True, run_feeds=None):
    """Run both; equal within TOL, same experts except on near-ties (margin < 1e-5 in float64).

    feeds: every input by name (for the reference); run_feeds: what the sessions take, if fewer."""
    run_feeds = feeds if run_feeds is None else run_feeds
    before = custom_ops.native_counters(LIB.path)["computes"]
    want = fallback.run(None, run_feeds)
    got = native.run(None, run_feeds)
    after = custom_ops.native_counters(LIB.path)["computes"]
    assert sum(after.values()) == sum(before.values()) + 1, "the native kernel did not run"
    for name, w, g in zip(OUTPUT_NAMES, want, got):
        assert w.shape == g.shape and g.dtype == np.float32, name
    n = feeds["x"].shape[0]
    chosen_w = np.where(want[2].sum(-1) > 0, want[1].argmax(-1), -1)  # -1: skipped
    chosen_g = np.where(got[2].sum(-1) > 0, got[1].argmax(-1), -1)
    differ = np.flatnonzero(chosen_w != chosen_g)
    if differ.size:
        margin = biased_margin(feeds)[differ]
        assert allow_ties and (margin < 1e-5).all(), f"expert choice differs at tokens {differ} (margins {margin})"
    same = np.setdiff1d(np.arange(n), differ)
    assert np.abs(want[0] - got[0]).max(initial=0) <= TOL, "state"
    assert np.array_equal(want[1][same], got[1][same]), "expert_select"
    assert np.abs(want[2][same] - got[2][same]).max(initial=0) <= TOL, "expert_weight"
    return want, differ.size


CASES = [
    (dims, n, layer, skip)
    for dims, lengths in (("tiny", (1, 2, 3, 5, 17, 64, 127, 512)), ("zaya1_8b", (1, 3, 64, 512)))
    for n in lengths
    for layer in ("first", "later", "later_broadcast")
    for skip in ("mixed", "all", "none")
]


@needs_lib
@pytest.mark.parametrize("dims,n,layer,skip", CASES)
def test_native_equals_function_body(sessions, dims, n, layer, skip):
    rng = np.random.default_rng()  # fresh inputs every run
    feeds = random_feeds(rng, n, dims, layer, skip)
    want, _ = compare(*sessions, feeds)
    skipped = int((want[2].sum(-1) == 0).sum())
    if skip == "all":
        assert skipped == n
        assert (want[1][:, 0] == 1).all()  # skipped tokens still name expert 0, with weight 0
    elif skip == "none":
        assert skipped == 0
    elif n >= 17:
        assert 0 < skipped < n, skipped  # the mixed case must route some tokens to skip


@needs_lib
def test_batch_rows_are_independent(sessions):
    """A batch of 3 sequences x 40 tokens equals each sequence run alone (the graph flattens B*S)."""
    rng = np.random.default_rng()
    feeds = random_feeds(rng, 120, "tiny", "later", "mixed")
    _, native = sessions
    whole = native.run(None, feeds)
    for b in range(3):
        rows = slice(40 * b, 40 * (b + 1))
        part = native.run(None, {**feeds, "x": feeds["x"][rows], "prev_state": feeds["prev_state"][rows]})
        for w, p in zip(whole, part):
            assert np.abs(w[rows] - p).max() <= TOL


@needs_lib
@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_does_not_change_results(threads):
    model = router_model()
    rng = np.random.default_rng()
    feeds = random_feeds(rng, 300, "zaya1_8b", "later", "mixed")
    compare(session(model, native=False), session(model, native=True, threads=threads), feeds)


@needs_lib
def test_epsilon_attribute_is_used():
    rng = np.random.default_rng()
    feeds = random_feeds(rng, 9, "tiny", "later", "mixed")
    feeds["x"] *= 1e-3  # tiny z: the norm's epsilon matters
    feeds["prev_state"] *= 1e-3
    model = router_model(epsilon=0.5)
    compare(session(model, native=False), session(model, native=True), feeds)


@needs_lib
@pytest.mark.parametrize("n", [1, 2, 5, 33, 300])
def test_weights_as_initializers(n):
    """The artifact's layout: weights are constant initializers (the CPU kernel pre-packs them),
    only x and prev_state are fed."""
    rng = np.random.default_rng()
    feeds = random_feeds(rng, n, "zaya1_8b", "later", "mixed")
    weights = {k: v for k, v in feeds.items() if k not in ("x", "prev_state")}
    model = router_model(weights=weights)
    small = {"x": feeds["x"], "prev_state": feeds["prev_state"]}
    compare(session(model, native=False), session(model, native=True), feeds, run_feeds=small)


@needs_lib
def test_bad_prev_state_shape_is_an_error_not_a_crash(sessions):
    rng = np.random.default_rng()
    feeds = random_feeds(rng, 5, "tiny", "later", "mixed")
    feeds["prev_state"] = feeds["prev_state"][:2]
    with pytest.raises(Exception, match=r"prev_state must be \[1, 32\] or \[N=5, 32\], got \[2, 32\]"):
        sessions[1].run(None, feeds)


@needs_lib
def test_zero_tokens(sessions):
    rng = np.random.default_rng()
    feeds = random_feeds(rng, 0, "tiny", "first", "mixed")
    state, select, weight = sessions[1].run(None, feeds)
    assert state.shape == (0, 32) and select.shape == weight.shape == (0, 4)


@needs_lib
def test_router_path_reports_native_and_fallback(sessions):
    fallback, native = sessions
    assert not custom_ops.router_path(fallback).native
    path = custom_ops.router_path(native)
    assert path.native and path.provider == "CPUExecutionProvider" and path.library == LIB.path
    assert str(path) == "native (CPUExecutionProvider)"


@needs_lib
@pytest.mark.skipif(bool(os.environ.get("ZAYA_EDGE_CPU_ISA")), reason="already a run with a forced CPU kernel")
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lower_isa_kernels(isa):
    """The AVX2 and baseline matmul kernels, forced on this machine (a fresh process each)."""
    env = {**os.environ, "ZAYA_EDGE_CPU_ISA": isa}
    args = [sys.executable, "-m", "pytest", __file__, "-x", "-p", "no:cacheprovider", "-k", "zaya1_8b or initializers"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout
