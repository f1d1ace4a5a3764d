"""Every checkpoint source gives the same artifact: live module, folder, shards, bf16."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ort_decoder import OrtDecoder  # noqa: E402

from zaya_edge import artifact as A  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import tiny_model  # noqa: E402


def _hashes(folder):
    files = json.loads((folder / A.MANIFEST_FILE).read_text())["files"]
    return {name: files[name]["sha256"] for name in (A.MODEL_FILE, A.DATA_FILE)}


def test_live_module_state_dict_and_folder_give_the_same_artifact(tmp_path):
    model = tiny_model(seed=4)
    model.save_pretrained(tmp_path / "ckpt")
    export_model(model, tmp_path / "live", precision="fp32", progress=False)
    export_model(tmp_path / "ckpt", tmp_path / "folder", precision="fp32", progress=False)
    export_model(model.state_dict(), tmp_path / "sd", config=model.config, precision="fp32", progress=False)
    assert _hashes(tmp_path / "live") == _hashes(tmp_path / "folder") == _hashes(tmp_path / "sd")
    manifest = A.Artifact.open(tmp_path / "folder").manifest
    assert manifest.source.kind == "folder"
    assert "model.safetensors" in manifest.source.files


def test_sharded_checkpoint_exports_identically(tmp_path):
    model = tiny_model(seed=4)
    model.save_pretrained(tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    export_model(tmp_path / "single", tmp_path / "a", precision="fp32", progress=False)
    export_model(tmp_path / "sharded", tmp_path / "b", precision="fp32", progress=False)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_bf16_checkpoint_matches_its_weights_in_fp32(tmp_path):
    """bf16 weights are widened exactly; the graph computes in fp32 like HF on the same weights."""
    model = tiny_model(seed=5).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    header_len = int.from_bytes((tmp_path / "bf16" / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((tmp_path / "bf16" / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert header["model.embed_tokens.weight"]["dtype"] == "BF16"
    export_model(tmp_path / "bf16", tmp_path / "art", all_logits=True, precision="fp32", progress=False)
    ref_model = model.to(torch.float32)
    ids = np.random.default_rng(0).integers(4, ref_model.config.vocab_size, (2, 12))
    with torch.no_grad():
        ref = ref_model(torch.as_tensor(ids)).logits.numpy()
    dec = OrtDecoder(tmp_path / "art")
    logits, _ = dec.step(ids, np.ones_like(ids), dec.zero_state(2))
    assert np.abs(logits - ref).max() <= 1e-4


def test_artifact_contents_and_genai_config(tmp_path):
    model = tiny_model(seed=4)
    export_model(model, tmp_path / "art", precision="fp32", progress=False)
    art = tmp_path / "art"
    for name in (A.MODEL_FILE, A.DATA_FILE, A.MANIFEST_FILE, A.CONFIG_FILE, A.GENERATION_CONFIG_FILE, A.GENAI_CONFIG_FILE):
        assert (art / name).is_file(), name
    manifest = A.Artifact.open(art).manifest
    assert manifest.format_version == A.FORMAT_VERSION
    layers = model.config.num_hidden_layers
    assert manifest.ops[A.ZAYA_DOMAIN] == {A.ROUTER_OP: layers, A.ATTENTION_OP: layers}
    assert manifest.kv_dtype == "float32"  # an fp32 export keeps the exact cache
    genai = json.loads((art / A.GENAI_CONFIG_FILE).read_text())
    assert genai["model"]["decoder"]["inputs"]["past_conv_names"] == A.PAST_CONV
    assert genai["model"]["decoder"]["outputs"]["present_recurrent_names"] == A.PRESENT_RECURRENT
    dec = OrtDecoder(art)
    graph_inputs = {i.name for i in dec.session.get_inputs()}
    assert graph_inputs == {name for name, _, _ in manifest.inputs}


def test_onnxruntime_genai_greedy_matches_onnxruntime(tmp_path):
    og = pytest.importorskip("onnxruntime_genai")
    model = tiny_model(seed=6)
    export_model(model, tmp_path / "art", precision="fp32", progress=False)
    prompt = np.random.default_rng(1).integers(4, model.config.vocab_size, 7)
    dec = OrtDecoder(tmp_path / "art")
    ids, state, tokens = prompt[None], dec.zero_state(1), []
    mask = np.ones((1, len(prompt)))
    for _ in range(10):
        logits, state = dec.step(ids, mask, state)
        tokens.append(int(logits[0, -1].argmax()))
        ids = np.array([[tokens[-1]]])
        mask = np.ones((1, mask.shape[1] + 1))
    genai_model = og.Model(str(tmp_path / "art"))
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=len(prompt) + 10, do_sample=False)
    gen = og.Generator(genai_model, params)
    gen.append_tokens(prompt.astype(np.int32))
    out = []
    while not gen.is_done() and len(out) < 10:
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    assert out == tokens[: len(out)] and len(out) == 10
