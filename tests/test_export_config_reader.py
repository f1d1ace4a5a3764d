"""The config reader against transformers' own (issue 17): `ZayaDims.from_dict` takes what
`ZayaConfig` takes and `ZayaForCausalLM` builds and runs, refuses the rest with transformers'
reason in one CheckpointError line, and turns any mutated config.json into such a line or an
acceptance. RoPE inverse frequencies are transformers' own, bit for bit.

ZAYA_EDGE_SLOW=1 runs the transformers differential on 2000 mutated configs instead of 150.
"""

from __future__ import annotations

import copy
import json
import os
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_export_configs import LONG, _rope  # noqa: E402
from transformers import ZayaConfig, ZayaForCausalLM  # noqa: E402

from zaya_edge.config import ZayaDims  # noqa: E402
from zaya_edge.errors import CheckpointError  # noqa: E402
from zaya_edge.export.fixtures.random_model import perturb, tiny_model  # noqa: E402
from zaya_edge.export.plan import check_exportable  # noqa: E402
from zaya_edge.export.rope import dynamic_inv_freq, inv_freq  # noqa: E402

MUTATIONS = 2000 if os.environ.get("ZAYA_EDGE_SLOW") == "1" else 150  # configs also run through transformers


@pytest.fixture(scope="module")
def real_config(tmp_path_factory):
    """A real config.json: what save_pretrained writes for a small model."""
    folder = tmp_path_factory.mktemp("cfg")
    tiny_model(seed=0, num_hidden_layers=2, layer_types=["hybrid", "hybrid_sliding"], sliding_window=4).save_pretrained(folder)
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("change,needle", [
    (dict(num_experts_per_tok=2), "num_experts_per_tok=1 only"),
    (dict(num_attention_heads=3), "must be a multiple of num_key_value_heads"),
    (dict(sliding_window=None), "sliding_window is not set"),
    (dict(rms_norm_eps=1), "rms_norm_eps is an integer"),
    (dict(vocab_size=True), "vocab_size is a boolean"),
    (dict(layer_types=["hybrid"]), "must equal the number of layer_types"),
    (dict(layer_types=["hybrid", "full_attention"]), "builds hybrid and hybrid_sliding layers only"),
    (dict(hidden_act="bogus"), "not an activation transformers knows"),
    (dict(pad_token_id=384), "outside the embedding's 384 rows"),
    (_rope("yarn", factor=2.0), "lacks original_max"),
    (dict(rope_parameters={"hybrid": {"rope_type": "default", "rope_theta": 1e4}}), "no object for hybrid_sliding"),
    (_rope("axial"), "not a RoPE type transformers has"),
    (dict(rope_parameters={"hybrid": {"rope_type": "default"}, "hybrid_sliding": {}}), "has no rope_theta"),
    (dict(rope_parameters=[1, 2]), "rope_parameters is a list"),
    (dict(head_dim=7, rope_parameters={lt: {"rope_theta": 1.0, "partial_rotary_factor": 1.0}
                                        for lt in ("hybrid", "hybrid_sliding")}), "even rotary dimension"),
    (dict(rope_parameters={lt: {"rope_theta": 1.0, "partial_rotary_factor": 2.0} for lt in ("hybrid", "hybrid_sliding")}),
     "rotates 64 dims of a 32-dim head"),
    (dict(rope_parameters={lt: {"rope_type": "dynamic", "rope_theta": 1.0, "factor": 2.0, "partial_rotary_factor": 1 / 16}
                           for lt in ("hybrid", "hybrid_sliding")}), "divides by zero"),
    (dict(use_return_dict=True), "read-only properties"),
])
def test_refusals_carry_transformers_reason(real_config, change, needle):
    with pytest.raises(CheckpointError, match=needle):
        ZayaDims.from_dict({**real_config, **change})
    with pytest.raises(Exception):  # transformers refuses the same config (building or running the model)
        _transformers_runs({**real_config, **change})


def _transformers_runs(cfg):
    """ZayaConfig + ZayaForCausalLM (perturbed: QK temperature non-zero) + a cached forward with finite
    logits; its default experts kernel, else the eager one."""
    config = ZayaConfig.from_dict(copy.deepcopy(cfg))
    torch.manual_seed(0)
    model = ZayaForCausalLM(config).eval()
    perturb(model)
    if not all(torch.isfinite(b).all() for n, b in model.named_buffers() if n.endswith("inv_freq")):
        raise FloatingPointError("transformers' RoPE frequencies are NaN or infinite")  # what it then computes is noise
    for impl in ("grouped_mm", "eager"):  # grouped_mm wants 16-byte strides: a kernel's limit, not the model's
        model.config._experts_implementation = impl
        try:
            with torch.no_grad():
                out = model(torch.tensor([[0, config.vocab_size - 1]]), use_cache=True)
                last = model(torch.tensor([[config.vocab_size - 1]]), cache=out.cache).logits
            if not (torch.isfinite(out.logits).all() and torch.isfinite(last).all()):
                raise FloatingPointError("transformers' model computes non-finite logits")
            return
        except RuntimeError as exc:
            if "strides" not in str(exc) or impl == "eager":
                raise


VALUES = [None, True, False, 0, 1, 2, 3, -1, 7, 8, 16, 33, 10**12, 0.0, 0.5, 1.0, 2.0, -1.5, 1e4, 1e308, float("nan"),
          float("inf"), "x", "hybrid", "linear", "gelu", "dynamic", "yarn", "bfloat16", [], [1, 2], ["hybrid", "hybrid"],
          {}, {"rope_type": "linear"}, {"hybrid": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0}},
          {"0": "a"}, [1.0, 1.0], [[1]], {"a": {"b": [None]}}]
EXTRA = ["rope_theta", "partial_rotary_factor", "rope_scaling", "torch_dtype", "dtype", "num_labels", "id2label", "foo",
         "truncate", "type", "rope_type", "factor", "original_max_position_embeddings", "short_factor", "long_factor",
         "low_freq_factor", "high_freq_factor", "attention_factor", "beta_fast", "mscale", "attn_implementation"]
ROPES = [_rope("linear", factor=2.0)["rope_parameters"],
         {"hybrid": {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8, "rope_theta": 100.0,
                     "original_max_position_embeddings": 8, "partial_rotary_factor": 0.5},
          "hybrid_sliding": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "rope_theta": 1e3}},
         {"hybrid": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 100.0},
          "hybrid_sliding": {"rope_type": "llama3", "factor": 4.0, "original_max_position_embeddings": 8, "rope_theta": 1e3,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0}}]


def _mutate(cfg, rng, values=VALUES):
    """1-3 random edits: delete or replace a key (top level, rope_parameters, a layer type's entry), or add one."""
    cfg = copy.deepcopy(cfg)
    for _ in range(rng.randint(1, 3)):
        rope = cfg.get("rope_parameters")
        nested = [d for d in rope.values() if isinstance(d, dict)] if isinstance(rope, dict) else []
        target = rng.choice([cfg] * 3 + ([rope] if isinstance(rope, dict) else []) + nested)
        keys = [k for k in target if k != "model_type"]
        op = rng.random()
        if op < 0.25 and keys:
            del target[rng.choice(keys)]
        elif op < 0.8 and keys:
            target[rng.choice(keys)] = copy.deepcopy(rng.choice(values))
        else:
            target[rng.choice(EXTRA)] = copy.deepcopy(rng.choice(values))
    return cfg


def _with_rope(cfg, i):
    cfg = copy.deepcopy(cfg)
    if i % 2:
        cfg["rope_parameters"] = copy.deepcopy(ROPES[(i // 2) % len(ROPES)])
    return cfg


def test_fuzzed_configs_are_one_checkpoint_error_or_accepted(real_config, tmp_path):
    rng, accepted = random.Random(0), 0
    for i in range(400):
        cfg = _mutate(_with_rope(real_config, i), rng)
        try:
            dims = ZayaDims.from_dict(cfg)
            check_exportable(dims, 64)  # the exporter's own refusals and the RoPE tables
            accepted += 1
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(exc)
    for text in ("", "[1, 2]", "{", '{"model_type": "zaya", "vocab_size": NaN}', "1e999", '"zaya"'):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(CheckpointError):
            ZayaDims.from_file(tmp_path / "config.json")
    assert 50 < accepted < 350, accepted


def _known_difference(cfg) -> bool:
    """Where zaya-edge refuses what transformers builds (documented): a model_type other than zaya, a
    dtype list, a zero-width hidden or intermediate size (only transformers' eager experts run those),
    head_dim 1 with an odd KV width; and a negative initializer_range, which only a random init reads."""
    return (isinstance(cfg.get("dtype"), list) or cfg.get("head_dim") == 1 or cfg.get("hidden_size") == 0
            or cfg.get("moe_intermediate_size") == 0 or "dtype" in json.dumps(cfg.get("rope_parameters"), default=str)
            or (type(cfg.get("initializer_range")) is float and cfg["initializer_range"] < 0))


def test_what_the_reader_accepts_is_what_transformers_runs(real_config):
    small = [v for v in VALUES if not (isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > 1e4)
             and not (isinstance(v, float) and v != v)]
    base = {**real_config, "vocab_size": 64, "hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 8, "num_experts": 2, "moe_intermediate_size": 8, "router_hidden_size": 4, "sliding_window": 3,
            "max_position_embeddings": 16}
    rng, mismatches, runs = random.Random(1), [], 0
    for i in range(MUTATIONS):
        cfg = _mutate(_with_rope(base, i), rng, small)
        if _known_difference(cfg):
            continue
        try:
            check_exportable(ZayaDims.from_dict(cfg), 64)
            ours = True
        except CheckpointError:
            ours = False
        try:
            _transformers_runs(cfg)
            theirs = True
        except Exception:  # noqa: BLE001 (any refusal of transformers)
            theirs = False
        runs += 1
        if ours != theirs:
            mismatches.append((ours, cfg))
    assert mismatches == [] and runs > 100, mismatches[:3]


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn", "longrope", "llama3", "proportional"])
def test_inverse_frequencies_are_transformers_own(kind):
    from transformers.models.zaya.modeling_zaya import ZayaRotaryEmbedding

    params = {"linear": dict(factor=4.0), "dynamic": dict(factor=4.0), "proportional": dict(partial_rotary_factor=0.25),
              "yarn": dict(factor=4.0, original_max_position_embeddings=16, beta_fast=8, mscale=1.0, mscale_all_dim=0.5),
              "longrope": dict(short_factor=LONG, long_factor=LONG[::-1], original_max_position_embeddings=16),
              "llama3": dict(factor=8.0, original_max_position_embeddings=16, low_freq_factor=1.0, high_freq_factor=4.0)}
    config = ZayaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, head_dim=32, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=64, **{
                            "rope_parameters": {"hybrid": _rope(kind, **params[kind])["rope_parameters"]["hybrid"]}})
    rotary = ZayaRotaryEmbedding(config)
    dims = ZayaDims.from_dict(json.loads(config.to_json_string(use_diff=False)))
    inv, scaling = inv_freq(dims, "hybrid")
    assert np.array_equal(inv, rotary.hybrid_inv_freq.numpy()) and scaling == rotary.hybrid_attention_scaling
    if kind in ("dynamic", "longrope"):  # past the original range: what transformers' update computes
        rotary(torch.zeros(1), torch.arange(100)[None], "hybrid")
        ours = dynamic_inv_freq(dims, "hybrid", 100) if kind == "dynamic" else inv_freq(dims, "hybrid", long=True)[0]
        np.testing.assert_allclose(ours, rotary.hybrid_inv_freq.numpy(), rtol=1e-6)
