"""int4/int8 artifacts of the tiny perturbed model against its fp32 artifact (teacher forced)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from ort_decoder import OrtDecoder  # noqa: E402

from zaya_edge import artifact as A  # noqa: E402
from zaya_edge.errors import ZayaEdgeError  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import MarkovLanguage, tiny_model, train_briefly  # noqa: E402


def _logits(folder, ids):
    dec = OrtDecoder(folder)
    logits, _ = dec.step(ids, np.ones_like(ids), dec.zero_state(ids.shape[0]))
    return logits


def _log_softmax(x):
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _compare(folder, ref_logits, ids):
    got = _logits(folder, ids)
    lr, lg = _log_softmax(ref_logits), _log_softmax(got)
    agree = float((got.argmax(-1) == ref_logits.argmax(-1)).mean())
    kl = float((np.exp(lr) * (lr - lg)).sum(-1).mean())
    return agree, kl


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny perturbed model after 40 Adam steps on a Markov language: confident predictions."""
    model = tiny_model(seed=1)
    language = MarkovLanguage(model.config.vocab_size, seed=0)
    train_briefly(model, language, steps=40)
    root = tmp_path_factory.mktemp("trained")
    for precision in ("fp32", "int4", "int8"):
        export_model(model, root / precision, precision=precision, all_logits=True, progress=False)
    ids = language.sample(2, 128, seed=99)  # 256 teacher-forced positions
    return root, ids, _logits(root / "fp32", ids)


def test_int4_top1_agreement_at_least_90_percent(trained):
    root, ids, ref = trained
    agree, kl = _compare(root / "int4", ref, ids)
    assert agree >= 0.90, (agree, kl)


def test_int8_top1_agreement_at_least_98_percent(trained):
    root, ids, ref = trained
    agree, kl = _compare(root / "int8", ref, ids)
    assert agree >= 0.98, (agree, kl)
    assert kl < _compare(root / "int4", ref, ids)[1]  # more bits, closer distribution


def test_untrained_model_distribution_stays_close(tmp_path):
    """The flat next-token distribution of a random model: top-1 flips easily, KL must stay small."""
    model = tiny_model(seed=1)
    ids = np.random.default_rng(0).integers(4, model.config.vocab_size, (2, 128))
    export_model(model, tmp_path / "fp32", precision="fp32", all_logits=True, progress=False)
    ref = _logits(tmp_path / "fp32", ids)
    for precision, max_kl in (("int4", 0.04), ("int8", 0.002)):
        export_model(model, tmp_path / precision, precision=precision, all_logits=True, progress=False)
        agree, kl = _compare(tmp_path / precision, ref, ids)
        assert kl < max_kl, (precision, agree, kl)


def test_graph_ops_and_manifest(trained):
    root, _, _ = trained
    manifest = A.Artifact.open(root / "int4").manifest
    layers = manifest.dims.num_layers
    ms = manifest.ops["com.microsoft"]
    assert ms["MatMulNBits"] == 2 * layers + 1  # fused q|k|v_cur|v_del, o_proj; the lm_head
    # the default: int4 experts as one ai.zaya::ExpertMoE per layer (its body: the QMoE below)
    assert manifest.ops[A.ZAYA_DOMAIN][A.EXPERT_MOE_OP] == layers and ms["GatherBlockQuantized"] == 1
    assert "QMoE" not in ms and manifest.quantization["experts"] == A.EXPERTS_FUSED
    assert "MoE" not in ms and "Gemm" not in manifest.ops["ai.onnx"] and "MatMul" not in manifest.ops["ai.onnx"]
    q = manifest.quantization
    assert manifest.precision == "int4"
    assert (q["bits"], q["block_size"], q["symmetric"], q["lm_head_bits"]) == (4, 32, True, 4)
    assert q["method"] in ("rtn", "mse")
    fp32 = A.Artifact.open(root / "fp32").manifest
    assert fp32.quantization == {}
    assert manifest.files[A.DATA_FILE].bytes < fp32.files[A.DATA_FILE].bytes / 3


def _with_outputs(folder, names, tmp_path):
    model = onnx.load(str(folder / A.MODEL_FILE))
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    path = tmp_path / "probe.onnx"
    onnx.save(model, str(path))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("fused", [True, False], ids=["ExpertMoE", "QMoE"])
def test_skip_expert_contributes_zero(tmp_path, fused):
    """Tokens routed to the skip class get an exactly zero expert output; the others do not."""
    model = tiny_model(seed=3)
    for layer in model.model.layers:
        layer.mlp.gate.balancing_biases[-1] = -0.85  # level with the experts: skip wins sometimes
    export_model(model, tmp_path / "int4", precision="int4", progress=False, fused_moe=fused)
    layers = model.config.num_hidden_layers
    weights = [f"/model/layers.{i}/moe/router/{A.ROUTER_OP}/output_2" for i in range(layers)]
    op = A.EXPERT_MOE_OP if fused else "QMoE"
    moe = [f"/model/layers.{i}/moe/experts/{op}/output_0" for i in range(layers)]
    sess = _with_outputs(tmp_path / "int4", weights + moe, tmp_path)
    dec = OrtDecoder(tmp_path / "int4")
    ids = np.random.default_rng(6).integers(4, model.config.vocab_size, (2, 24))
    feed = {A.INPUT_IDS: ids, A.ATTENTION_MASK: np.ones_like(ids), **dec.zero_state(2)}
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    skipped_total, routed = 0, 0
    for w_name, m_name in zip(weights, moe):
        skipped = (out[w_name] == 0).all(-1)
        assert (out[m_name][skipped] == 0).all()
        assert (np.abs(out[m_name][~skipped]).max(-1) > 0).all()
        skipped_total += int(skipped.sum())
        routed += skipped.size
    assert 0 < skipped_total < routed, (skipped_total, routed)


def test_bf16_source_tensors_are_kept_exactly(tmp_path):
    """A bf16 checkpoint's float tensors are stored as bf16 and Cast: same logits as fp32 storage."""
    model = tiny_model(seed=5).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    export_model(tmp_path / "bf16", tmp_path / "from_bf16", precision="int4", all_logits=True, progress=False)
    export_model(model.to(torch.float32), tmp_path / "from_fp32", precision="int4", all_logits=True, progress=False)
    proto = onnx.load(str(tmp_path / "from_bf16" / A.MODEL_FILE), load_external_data=False)
    dtypes = {i.name: i.data_type for i in proto.graph.initializer}
    assert dtypes["model.layers.0.input_layernorm.weight"] == onnx.TensorProto.BFLOAT16
    assert dtypes["model.layers.0.self_attn.qkv_proj.conv_qk_grouped.weight"] == onnx.TensorProto.BFLOAT16
    ids = np.random.default_rng(0).integers(4, model.config.vocab_size, (1, 16))
    np.testing.assert_allclose(_logits(tmp_path / "from_bf16", ids), _logits(tmp_path / "from_fp32", ids), atol=1e-5)
    sizes = [json.loads((tmp_path / f / A.MANIFEST_FILE).read_text())["files"][A.DATA_FILE]["bytes"]
             for f in ("from_bf16", "from_fp32")]
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize(
    "options,needles",
    [
        (dict(precision="int4", block_size=48), ["block size 48", "16, 32, 64, 128, 256"]),
        (dict(precision="int8", lm_head="int2"), ["lm_head", "int2"]),
        (dict(precision="int4", quant_method="gptq"), ["quantization method", "gptq"]),
        (dict(precision="fp32", block_size=32), ["block_size=32", "fp32"]),
        (dict(precision="fp32", asymmetric=True), ["asymmetric=True", "fp32"]),
    ],
)
def test_bad_quantization_options(tmp_path, options, needles):
    with pytest.raises(ZayaEdgeError) as err:
        export_model(tiny_model(seed=0, num_hidden_layers=1), tmp_path / "out", progress=False, **options)
    for n in needles:
        assert n in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_block_larger_than_the_hidden_size_pads_and_says_so(tmp_path):
    """block_size=128 on hidden 64 used to be refused; now the last block is zero-padded (issue 17)."""
    model = tiny_model(seed=0, num_hidden_layers=1)
    ids = np.random.default_rng(0).integers(4, model.config.vocab_size, (1, 16))
    logits = {}
    for block in (32, 128, 256):
        export_model(model, tmp_path / f"b{block}", precision="int4", block_size=block, all_logits=True, progress=False)
        logits[block] = _logits(tmp_path / f"b{block}", ids)
    record = A.Artifact.open(tmp_path / "b128").manifest.quantization
    assert record["padded_blocks"].startswith("hidden_size 64 -> 128, moe_intermediate_size 64 -> 128")
    assert "padded_blocks" not in A.Artifact.open(tmp_path / "b32").manifest.quantization
    # every row (K <= 128) is one block either way, the zeros past it quantize to nothing: same codes
    np.testing.assert_allclose(logits[256], logits[128], atol=1e-5)
    with torch.no_grad():
        ref = model(torch.as_tensor(ids)).logits.numpy()
    assert np.abs(logits[128] - ref).max() < 2 * np.abs(logits[32] - ref).max()
