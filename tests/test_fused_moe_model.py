"""Exported tiny models with fused experts (ai.zaya::ExpertMoE) against the portable export.

The fused artifact run by stock onnxruntime (the op's function body) equals the portable artifact
bit for bit; with the native kernels it equals the portable artifact with the native Router
(logits and every state within 1e-4 relative at accuracy_level 0; at the default level 4 within
one int8 rounding step, see test_fused_moe.py). Skip expert taken by some tokens and by all,
left-padded batches, decode steps, long prefills; SwiGLU (QMoE's layout) and GELU (the dense one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from ort_decoder import OrtDecoder  # noqa: E402
from test_runtime_cli import cli  # noqa: E402

from zaya_edge import artifact as A  # noqa: E402
from zaya_edge import custom_ops  # noqa: E402
from zaya_edge.errors import ArtifactError  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import tiny_model  # noqa: E402

LIB = custom_ops.library_info() if custom_ops.find_library() else None
needs_lib = pytest.mark.skipif(LIB is None or A.EXPERT_MOE_OP not in LIB.ops,
                               reason="custom-op library with ExpertMoE not built (make custom-ops)")
TOL = 1e-4
STEP_TOL = 1e-2  # accuracy_level 4: one int8 rounding step flipped somewhere (test_fused_moe.py)


def _model(hidden_act: str, skip: str, seed: int = 21):
    model = tiny_model(seed=seed, **({} if hidden_act == "silu" else {"hidden_act": hidden_act}))
    if skip == "all":
        for layer in model.model.layers:
            layer.mlp.gate.balancing_biases[-1] = 0.3
    return model


def _pair(model, root, **options):
    """(fused, portable) artifact folders of one model; an fp32 cache, so the comparison is the
    experts' (an fp16 cache would turn 1e-7 differences into flipped roundings of keys)."""
    fused, portable = root / "fused", root / "portable"
    options = {"kv_cache": "fp32", **options}
    export_model(model, fused, precision="int4", all_logits=True, progress=False, fused_moe=True, **options)
    export_model(model, portable, precision="int4", all_logits=True, progress=False, fused_moe=False, **options)
    return fused, portable


def _prompts(rng, vocab: int, lengths=(13, 5, 9)):
    """A left-padded batch (as the runtime lays prompts out)."""
    width = max(lengths)
    ids, mask = np.zeros((len(lengths), width), np.int64), np.zeros((len(lengths), width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rng.integers(4, vocab, n)
        mask[row, width - n:] = 1
    return ids, mask


def _rel(a, b) -> float:
    """Max difference relative to the tensor's largest value (a per-last-axis scale made the conv
    state's 2-wide rows near zero fail on 1e-7 differences)."""
    scale = float(np.abs(b).max(initial=0)) or 1.0
    return float(np.abs(a.astype(np.float64) - b).max(initial=0)) / scale


def _compare(a: OrtDecoder, b: OrtDecoder, ids, mask, steps: int, tol: float, vocab: int, rng) -> None:
    """Prefill then `steps` decode steps on both; logits and states within tol (0: identical)."""
    sa, sb = a.zero_state(len(ids)), b.zero_state(len(ids))
    for step in range(steps + 1):
        (la, sa), (lb, sb) = a.step(ids, mask, sa), b.step(ids, mask, sb)
        check = np.array_equal if tol == 0 else (lambda x, y: _rel(x, y) <= tol)
        assert check(la, lb), f"logits differ at step {step}: {_rel(la, lb):.2e}"
        for name in sa:
            assert check(sa[name], sb[name]), f"{name} differs at step {step}"
        ids = rng.integers(4, vocab, (len(ids), 1))
        mask = np.concatenate([mask, np.ones((len(ids), 1), np.int64)], 1)


@pytest.mark.parametrize("hidden_act", ["silu", "gelu"])
def test_manifest_and_graph_record_the_experts(tmp_path, hidden_act):
    fused, portable = _pair(_model(hidden_act, "some"), tmp_path)
    layers = A.Artifact.open(fused).dims.num_layers
    f, p = A.Artifact.open(fused), A.Artifact.open(portable)
    assert (f.experts, p.experts) == (A.EXPERTS_FUSED, A.EXPERTS_PORTABLE)
    assert f.manifest.ops[A.ZAYA_DOMAIN][A.EXPERT_MOE_OP] == layers
    assert A.EXPERT_MOE_OP not in p.manifest.ops[A.ZAYA_DOMAIN]
    ms_f, ms_p = f.manifest.ops["com.microsoft"], p.manifest.ops["com.microsoft"]
    if hidden_act == "silu":
        assert ms_p["QMoE"] == layers and "QMoE" not in ms_f
    else:  # the dense graph's two MatMulNBits per layer moved into the op
        assert ms_p["MatMulNBits"] - ms_f["MatMulNBits"] == 2 * layers
    assert f.manifest.files[A.DATA_FILE] == p.manifest.files[A.DATA_FILE]  # the same stored blocks, byte for byte


@pytest.mark.parametrize("options", [{"asymmetric": True}, {"precision": "int8"}, {"hidden_act": "quick_gelu"}],
                         ids=["asymmetric", "int8", "quick_gelu"])
def test_exports_the_kernel_does_not_cover_stay_portable(tmp_path, options):
    options = dict(options)
    model = tiny_model(seed=3, **({"hidden_act": options.pop("hidden_act")} if "hidden_act" in options else {}))
    export_model(model, tmp_path / "a", progress=False, **{"precision": "int4", **options})
    art = A.Artifact.open(tmp_path / "a")
    assert art.experts == A.EXPERTS_PORTABLE and A.EXPERT_MOE_OP not in art.manifest.ops[A.ZAYA_DOMAIN]


def test_manifests_without_the_record_are_portable(tmp_path):
    export_model(tiny_model(seed=4), tmp_path / "a", precision="int4", progress=False, fused_moe=False)
    path = tmp_path / "a" / A.MANIFEST_FILE
    data = json.loads(path.read_text())
    del data["quantization"]["experts"]  # as every artifact written before the record existed
    path.write_text(json.dumps(data))
    assert A.Artifact.open(tmp_path / "a").experts == A.EXPERTS_PORTABLE
    data["quantization"]["experts"] = "sideways"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="quantization.experts must be"):
        A.Artifact.open(tmp_path / "a").experts


def test_the_cli_exports_fused_by_default_and_portable_when_asked(tiny_checkpoint, tmp_path):
    for flags, want in (([], A.EXPERTS_FUSED), (["--portable"], A.EXPERTS_PORTABLE)):
        out = tmp_path / f"a{len(flags)}"
        proc = cli("export", tiny_checkpoint[1], "-o", out, "--quiet", *flags)
        assert proc.returncode == 0, proc.stderr
        assert A.Artifact.open(out).experts == want
    inspect = cli("inspect", tmp_path / "a0")
    assert "experts       ai.zaya::ExpertMoE" in inspect.stdout, inspect.stdout


@pytest.mark.parametrize("hidden_act,skip", [("silu", "some"), ("silu", "all"), ("gelu", "some")])
def test_function_body_is_the_portable_export_bit_for_bit(tmp_path, hidden_act, skip):
    model = _model(hidden_act, skip)
    fused, portable = _pair(model, tmp_path)
    rng = np.random.default_rng(5)
    ids, mask = _prompts(rng, model.config.vocab_size)
    _compare(OrtDecoder(fused), OrtDecoder(portable), ids, mask, 3, 0, model.config.vocab_size, rng)


def _natives(tmp_path, model, level: int, monkeypatch):
    import zaya_edge.export.quant_layers as quant_layers

    monkeypatch.setattr(quant_layers, "ACCURACY_LEVEL", level)
    fused, portable = _pair(model, tmp_path)
    return OrtDecoder(fused, custom_ops=str(LIB.path)), OrtDecoder(portable, custom_ops=str(LIB.path))


@needs_lib
@pytest.mark.parametrize("hidden_act,skip", [("silu", "some"), ("silu", "all"), ("gelu", "some")])
def test_native_equals_portable_at_fp32_activations(tmp_path, monkeypatch, hidden_act, skip):
    model = _model(hidden_act, skip)
    fused, portable = _natives(tmp_path, model, 0, monkeypatch)
    assert custom_ops.op_path(fused.session, A.EXPERT_MOE_OP).native
    rng = np.random.default_rng()
    ids, mask = _prompts(rng, model.config.vocab_size)
    before = custom_ops.moe_kernel(LIB.path)["computes"]
    _compare(fused, portable, ids, mask, 4, TOL, model.config.vocab_size, rng)
    assert custom_ops.moe_kernel(LIB.path)["computes"] - before == 5 * fused.dims.num_layers
    long = rng.integers(4, model.config.vocab_size, (2, 512))
    _compare(fused, portable, long, np.ones_like(long), 0, TOL, model.config.vocab_size, rng)


@needs_lib
def test_native_equals_portable_at_the_default_level4(tmp_path, monkeypatch):
    """int8 activations, as the default export runs: within one int8 step, usually far closer."""
    model = _model("silu", "some")
    fused, portable = _natives(tmp_path, model, 4, monkeypatch)
    rng = np.random.default_rng()
    ids, mask = _prompts(rng, model.config.vocab_size, (40, 1, 23, 7))
    _compare(fused, portable, ids, mask, 4, STEP_TOL, model.config.vocab_size, rng)


@needs_lib
@pytest.mark.skipif(bool(os.environ.get("ZAYA_EDGE_CPU_ISA")), reason="already a run with a forced CPU kernel")
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lower_isa_kernels(isa):
    env = {**os.environ, "ZAYA_EDGE_CPU_ISA": isa}
    args = [sys.executable, "-m", "pytest", __file__, "-x", "-p", "no:cacheprovider", "-k", "default_level4"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout


def _greedy_ort(decoder: OrtDecoder, prompt, n: int) -> list[int]:
    ids, state, tokens, mask = prompt[None], decoder.zero_state(1), [], np.ones((1, len(prompt)))
    for _ in range(n):
        logits, state = decoder.step(ids, mask, state)
        tokens.append(int(logits[0, -1].argmax()))
        ids, mask = np.array([[tokens[-1]]]), np.ones((1, mask.shape[1] + 1))
    return tokens


def _greedy_genai(og, folder, prompt, n: int) -> list[int]:
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + n, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt.astype(np.int32))
    out = []
    while not gen.is_done() and len(out) < n:
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out


def test_onnxruntime_genai_runs_the_fused_artifact(tmp_path):
    """The default (fused) int4 artifact under onnxruntime-genai: its function bodies, and with the
    library named in genai_config.json the native kernels; greedy equal to onnxruntime's."""
    og = pytest.importorskip("onnxruntime_genai")
    model = tiny_model(seed=6)
    export_model(model, tmp_path / "art", precision="int4", progress=False)
    assert A.Artifact.open(tmp_path / "art").experts == A.EXPERTS_FUSED
    prompt = np.random.default_rng(1).integers(4, model.config.vocab_size, 7)
    assert _greedy_genai(og, tmp_path / "art", prompt, 10) == _greedy_ort(OrtDecoder(tmp_path / "art"), prompt, 10)
    if LIB is None or A.EXPERT_MOE_OP not in LIB.ops:
        return
    want = _greedy_ort(OrtDecoder(tmp_path / "art", custom_ops=str(LIB.path)), prompt, 10)
    config = tmp_path / "art" / A.GENAI_CONFIG_FILE
    genai = json.loads(config.read_text())
    genai["model"]["decoder"]["session_options"]["custom_ops_library"] = str(LIB.path)
    config.write_text(json.dumps(genai))  # (the manifest's record of this file no longer holds: genai does not care)
    before = custom_ops.moe_kernel(LIB.path)["computes"]
    assert _greedy_genai(og, tmp_path / "art", prompt, 10) == want
    assert custom_ops.moe_kernel(LIB.path)["computes"] > before
