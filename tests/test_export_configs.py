"""Every model transformers' ZayaForCausalLM takes exports (issue 17).

The configurations of transformers' own ZAYA tests (ZayaModelTester's defaults, the CCA cache
test's config, the sliding and RoPE-scaling variants; tests/models/zaya/test_modeling_zaya.py and
tests/causal_lm_tester.py) and a matrix of others: fp32 logits within 1e-4 of transformers over a
prefill and decode steps (transformers run incrementally, as `generate` runs it), the runtime's
greedy tokens equal to `generate`'s, and int4 against plain round-to-nearest int4. The config reader
has its own file (test_export_config_reader.py). The whole matrix takes ~40 s on two cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ort_decoder import OrtDecoder  # noqa: E402
from transformers import ZayaConfig, ZayaForCausalLM  # noqa: E402

from zaya_edge import artifact as A  # noqa: E402
from zaya_edge import custom_ops  # noqa: E402
from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import MarkovLanguage, perturb, tiny_model, train_briefly  # noqa: E402
from zaya_edge.runtime import Engine, Request, SamplingParams  # noqa: E402

TOL = 1e-4
NATIVE = custom_ops.find_library() is not None  # the matrix runs through the native kernels too

# transformers' ZayaModelTester: CausalLMModelTester's defaults that are ZayaConfig arguments, and its own
TESTER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
              head_dim=16, hidden_act="gelu", max_position_embeddings=512, initializer_range=0.02, pad_token_id=0,
              bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, moe_intermediate_size=32,
              num_experts_per_tok=1, num_experts=8, layer_types=["hybrid", "hybrid_sliding"], sliding_window=64)
CCA_CACHE_TEST = dict(vocab_size=128, hidden_size=32, moe_intermediate_size=32, num_hidden_layers=1, num_experts=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, router_hidden_size=4,
                      tie_word_embeddings=False)


def _rope(kind, **params):
    """The same rope parameters for both layer types (as the tester's RoPE-scaling test sets them)."""
    entry = {"rope_type": kind, "rope_theta": 10_000.0, "partial_rotary_factor": 0.5, **params}
    return {"rope_parameters": {"hybrid": dict(entry), "hybrid_sliding": dict(entry)}}


LONG = [1.0 + 0.25 * i for i in range(8)]
# name: exact (a transformers test's config, as it is) or cfg (over tiny_model's); prompt, steps, context
CASES = {
    "tester": dict(exact=TESTER),
    "tester-sliding-3": dict(exact={**TESTER, "layer_types": ["hybrid_sliding", "hybrid"], "sliding_window": 3}),
    "tester-linear": dict(exact={**TESTER, **_rope("linear", factor=10.0)}),
    "tester-yarn": dict(exact={**TESTER, **_rope("yarn", factor=10.0, original_max_position_embeddings=512)}),
    "tester-dynamic-past-512": dict(exact={**TESTER, **_rope("dynamic", factor=10.0)}, prompt=508, context=1024),
    "cca-cache-test": dict(exact=CCA_CACHE_TEST),
    "tiny": dict(cfg={}),
    "mqa": dict(cfg=dict(num_attention_heads=4, num_key_value_heads=1)),
    "gqa-3-way": dict(cfg=dict(num_attention_heads=6, num_key_value_heads=2, head_dim=16)),
    "head-dim-8": dict(cfg=dict(head_dim=8)),
    "head-dim-12-plain-attention": dict(cfg=dict(head_dim=12, layer_types=["hybrid", "hybrid_sliding"], sliding_window=3)),
    "head-dim-16": dict(cfg=dict(head_dim=16)),
    "head-dim-24": dict(cfg=dict(head_dim=24)),
    "head-dim-64": dict(cfg=dict(head_dim=64)),
    "head-dim-128": dict(cfg=dict(head_dim=128, num_attention_heads=2, num_key_value_heads=1)),
    "head-dim-6-odd-rotary": dict(cfg=dict(head_dim=6)),
    "attention-bias": dict(cfg=dict(attention_bias=True)),
    "bias-plain-attention": dict(cfg=dict(attention_bias=True, head_dim=20)),
    "untied-lm-head-bias": dict(cfg=dict(tie_word_embeddings=False, lm_head_bias=True)),
    "untied": dict(cfg=dict(tie_word_embeddings=False)),
    "tied-lm-head-bias": dict(cfg=dict(lm_head_bias=True)),
    "conv-3-3": dict(cfg=dict(cca_time0=3, cca_time1=3)),
    "conv-3-2": dict(cfg=dict(cca_time0=3, cca_time1=2)),
    "conv-1-1": dict(cfg=dict(cca_time0=1, cca_time1=1)),
    "partial-rotary-1.0": dict(cfg=dict(rope_parameters={"hybrid": {"rope_theta": 1e4, "partial_rotary_factor": 1.0}})),
    "partial-rotary-0.3": dict(cfg=dict(head_dim=20, rope_parameters={"hybrid": {"rope_theta": 1e4,
                                                                                 "partial_rotary_factor": 0.3}})),
    "rope-linear": dict(cfg=_rope("linear", factor=4.0)),
    "rope-dynamic": dict(cfg=dict(max_position_embeddings=16, **_rope("dynamic", factor=4.0)), prompt=10, steps=14,
                         context=64),
    "rope-dynamic-long-prompt": dict(cfg=dict(max_position_embeddings=16, **_rope("dynamic", factor=4.0)), prompt=20,
                                     steps=6, context=64),
    "rope-yarn": dict(cfg=dict(max_position_embeddings=64, **_rope("yarn", factor=4.0, beta_fast=8,
                                                                   original_max_position_embeddings=16))),
    "rope-longrope": dict(cfg=dict(max_position_embeddings=64, **_rope(
        "longrope", short_factor=[1.0] * 8, long_factor=LONG, original_max_position_embeddings=16)), prompt=10, steps=12),
    "rope-llama3": dict(cfg=dict(max_position_embeddings=64, **_rope(
        "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16))),
    "rope-proportional": dict(cfg=_rope("proportional", partial_rotary_factor=0.25)),
    "odd-vocab-hidden-intermediate": dict(cfg=dict(vocab_size=389, hidden_size=48, moe_intermediate_size=40, head_dim=24)),
    "relu2-experts": dict(cfg=dict(hidden_act="relu2")),
    "no-layers": dict(cfg=dict(num_hidden_layers=0)),
}


def _run(name):
    """(prompt, decode steps, context_length) of a case."""
    case = CASES[name]
    return case.get("prompt", 12), case.get("steps", 8), case.get("context")


def _model(name, seed=0):
    case = CASES[name]
    if "exact" in case:
        torch.manual_seed(seed)
        model = ZayaForCausalLM(ZayaConfig(**case["exact"])).eval()
        perturb(model, seed)
    else:
        model = tiny_model(seed=seed, **{"num_hidden_layers": 2, **case["cfg"]})
    with torch.no_grad():  # biases that matter (perturb's are ±0.005): the first token's delayed value is one
        for n, p in model.named_parameters():
            if ".self_attn." in n and n.endswith(".bias"):
                p.mul_(40)
    return model


def _hf_incremental(model, ids, prompt):
    """transformers' logits [B, T, V]: one call over the prompt, then one per token (as generate runs)."""
    t = torch.as_tensor(ids)
    with torch.no_grad():
        out = model(t[:, :prompt], use_cache=True)
        logits, cache = [out.logits], out.cache
        for i in range(prompt, t.shape[1]):
            out = model(t[:, i : i + 1], cache=cache, use_cache=True)
            logits.append(out.logits)
            cache = out.cache
    return torch.cat(logits, 1).numpy()


def _fp32_diff(model, folder, prompt, steps, seed=0, native=False):
    """Max |logit diff| of the artifact (function bodies; and the native kernels with `native`)
    against transformers. One reference run: transformers' dynamic RoPE keeps the longest length
    it has seen, so a second run over the same ids would not be the same reference."""
    ids = np.random.default_rng(seed).integers(3, model.config.vocab_size, size=(2, prompt + steps))
    ref = _hf_incremental(model, ids, prompt)
    diffs = []
    for dec in [OrtDecoder(folder)] + ([OrtDecoder(folder, custom_ops=True)] if native else []):
        logits, state = dec.step(ids[:, :prompt], np.ones((2, prompt)), dec.zero_state(2))
        diffs.append([np.abs(logits - ref[:, :prompt]).max()])
        for t in range(prompt, prompt + steps):
            logits, state = dec.step(ids[:, t : t + 1], np.ones((2, t + 1)), state)
            diffs[-1].append(np.abs(logits[:, 0] - ref[:, t]).max())
    return tuple(float(max(d)) for d in diffs) if native else float(max(diffs[0]))


def _greedy(model, folder, prompt, new_tokens, seed=1):
    """Engine's greedy tokens and transformers' generate's; a difference must be a float tie."""
    p = [int(t) for t in np.random.default_rng(seed).integers(3, model.config.vocab_size, prompt)]
    params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    ours = Engine.load(folder).generate_batch([Request(tuple(p), params)])[0].tokens
    with torch.no_grad():
        out = model.generate(torch.tensor([p]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                             pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    ref = out.sequences[0, prompt:].tolist()
    for step, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            top2 = torch.topk(out.scores[step][0], 2).values
            assert float(top2[0] - top2[1]) < 1e-4, (step, ours, ref)  # only a near-tie may flip
            break
    return ours, ref


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_matches_transformers_and_the_runtime_generates_its_tokens(name, tmp_path):
    prompt, steps, context = _run(name)
    model = _model(name)
    export_model(model, tmp_path / "fp32", precision="fp32", all_logits=True, context_length=context, progress=False)
    diff, native = _fp32_diff(model, tmp_path / "fp32", prompt, steps, native=True) if NATIVE else (
        _fp32_diff(model, tmp_path / "fp32", prompt, steps), 0.0)
    print(f"FP32 {name}: max |logit diff| {diff:.2e} (native kernels {native:.2e})")
    assert diff <= TOL and native <= TOL
    length = min(prompt, 12) if context is None else prompt
    ours, ref = _greedy(model, tmp_path / "fp32", length, min(12, (context or 512) - length))
    assert len(ours) == len(ref) > 0


def test_scaled_rope_past_the_boundary_is_not_the_default(tmp_path):
    """The dynamic and longrope cases leave the original range, where they differ from plain RoPE."""
    for name, default in (("rope-dynamic", {"max_position_embeddings": 16}), ("rope-longrope", {})):
        model = _model(name)
        plain = tiny_model(seed=0, num_hidden_layers=2, **default, **_rope("default"))
        plain.load_state_dict(model.state_dict())
        ids = np.random.default_rng(0).integers(3, 384, size=(1, 24))
        assert np.abs(_hf_incremental(model, ids, 10) - _hf_incremental(plain, ids, 10))[:, 17:].max() > 1e-3


def test_plain_attention_only_where_the_kernel_refuses_the_head_size(tmp_path):
    """CachedAttention (GroupQueryAttention in its body) wherever the head size is a multiple of 8."""
    for head_dim, cached in ((12, False), (16, True)):
        export_model(tiny_model(seed=0, num_hidden_layers=1, head_dim=head_dim), tmp_path / str(head_dim),
                     precision="fp32", progress=False)
        ops = A.Artifact.open(tmp_path / str(head_dim)).manifest.ops
        assert (A.ATTENTION_OP in ops[A.ZAYA_DOMAIN]) == cached and ops["com.microsoft"]["RotaryEmbedding"] == 2
        assert "GroupQueryAttention" not in ops["com.microsoft"]


def test_folder_export_of_a_biased_yarn_model(tmp_path):
    """config.json and safetensors of a model the old exporter refused, through the folder path."""
    model = _model("rope-yarn")
    model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["rope_parameters"]["hybrid"]["rope_type"] == "yarn"
    export_model(tmp_path / "ckpt", tmp_path / "fp32", precision="fp32", all_logits=True, progress=False)
    assert _fp32_diff(model, tmp_path / "fp32", 12, 6) <= TOL
    biased = _model("attention-bias")
    biased.save_pretrained(tmp_path / "biased")
    export_model(tmp_path / "biased", tmp_path / "biased-fp32", precision="fp32", all_logits=True, progress=False)
    assert _fp32_diff(biased, tmp_path / "biased-fp32", 12, 6) <= TOL


# ---- int4 against plain round-to-nearest int4 -----------------------------------------------------
def _top1(folder, ids, ref):
    """Per position: does the artifact's argmax agree with transformers' fp32 one?"""
    dec = OrtDecoder(folder)
    logits, _ = dec.step(ids, np.ones_like(ids), dec.zero_state(ids.shape[0]))
    return logits.argmax(-1) == ref.argmax(-1)


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("no-layers", "tester-dynamic-past-512")])
def test_int4_is_at_least_round_to_nearest(name, tmp_path):
    """The default int4 (per-block MSE scales) against plain round-to-nearest int4 on the same briefly
    trained model, 1024 teacher-forced positions, paired: the positions only RTN gets right may exceed
    those only the default gets right by no more than three standard deviations of a sign test (MSE
    scales lower the weight error, not every argmax flip: on some models RTN wins a few positions)."""
    model = _model(name)
    language = MarkovLanguage(model.config.vocab_size, seed=0)
    train_briefly(model, language, steps=30)
    ids = language.sample(8, 128, seed=99)
    with torch.no_grad():
        ref = model(torch.as_tensor(ids)).logits.numpy()
    right = {}
    for method in ("mse", "rtn"):
        export_model(model, tmp_path / method, precision="int4", quant_method=method, all_logits=True,
                     context_length=256, progress=False)
        right[method] = _top1(tmp_path / method, ids, ref)
    only_rtn, only_mse = int((right["rtn"] & ~right["mse"]).sum()), int((right["mse"] & ~right["rtn"]).sum())
    print(f"INT4 {name}: top1 {right['mse'].mean():.4f} rtn {right['rtn'].mean():.4f} only-rtn {only_rtn} only-mse {only_mse}")
    assert only_rtn - only_mse <= 3 * (only_rtn + only_mse) ** 0.5 and right["mse"].mean() > 0.8
