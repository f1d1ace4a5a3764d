"""The model's dimensions, read from a ZAYA `config.json` without transformers.

Exporter and runtime both need the same derived sizes (conv channels, state shapes, rope
settings); deriving them in one place keeps the two sides from drifting apart. `from_dict` takes
what transformers' `ZayaConfig` takes and `ZayaForCausalLM` builds and runs (transformers 5.23+:
configuration_zaya.py, modeling_zaya.py, modeling_rope_utils.py); the rest is one CheckpointError
line with transformers' reason:

    dict ─ numbers finite ─ field types (strict: an int is no float, a bool no int) ─ ZayaConfig's
         validators (experts per token, heads, layer types, RoPE keys) ─ what the model needs to be
         built and run (positive sizes, RoPE per layer type) ─► ZayaDims
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from zaya_edge.errors import CheckpointError
from zaya_edge.typed_json import JSON_NAMES, json_kind, json_object

LAYER_TYPES = ("hybrid", "hybrid_sliding")
DEFAULT_ROPE = {
    "hybrid": {"rope_type": "default", "rope_theta": 5_000_000.0, "partial_rotary_factor": 0.5},
    "hybrid_sliding": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5},
}
ROPE_KEYS = {  # transformers' ROPE_INIT_FUNCTIONS and "default": (keys its validation requires, others read)
    "default": ((), ()), "linear": (("factor",), ()), "dynamic": (("factor",), ()),
    "yarn": (("factor", "original_max_position_embeddings"),
             ("attention_factor", "mscale", "mscale_all_dim", "beta_fast", "beta_slow")),
    "longrope": (("short_factor", "long_factor", "original_max_position_embeddings"), ("factor", "attention_factor")),
    "llama3": (("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor", "rope_theta"), ()),
    "proportional": (("rope_theta",), ("factor",)),
}
_NULLABLE = {"yarn": ("factor", "attention_factor", "mscale", "mscale_all_dim", "beta_fast", "beta_slow"),
             "longrope": ("factor", "attention_factor")}  # None is read as "use the default"
ACTIVATIONS = set("gelu gelu_10 gelu_accurate gelu_fast gelu_new gelu_python gelu_python_tanh gelu_pytorch_tanh "
                  "hardswish laplace leaky_relu linear mish prelu quick_gelu relu relu2 relu6 sigmoid silu "
                  "sqrtsoftplus swish tanh xielu".split())  # transformers.activations.ACT2FN
TORCH_DTYPES = set("float32 float float64 double float16 half bfloat16 complex32 chalf complex64 cfloat complex128 "
                   "cdouble uint8 uint16 uint32 uint64 int8 int16 short int32 int int64 long bool float8_e4m3fn "
                   "float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz float8_e8m0fnu quint8 qint8 qint32".split())
_NONE = type(None)
IMPLEMENTATIONS = {"attn_implementation": ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3",
                                           "flash_attention_4", "paged|eager"),
                   "experts_implementation": ("eager", "grouped_mm", "batched_mm", "deepgemm", "sonicmoe")}
# ZayaConfig's dataclass fields (its own and PreTrainedConfig's) and their annotations
FIELD_TYPES = {
    "vocab_size": (int,), "hidden_size": (int,), "num_hidden_layers": (int,), "num_attention_heads": (int,),
    "num_key_value_heads": (int,), "hidden_act": (str,), "max_position_embeddings": (int,),
    "initializer_range": (float,), "rms_norm_eps": (float,), "use_cache": (bool,), "tie_word_embeddings": (bool,),
    "rope_parameters": (dict, _NONE), "sliding_window": (int, _NONE), "attention_dropout": (float, int),
    "moe_intermediate_size": (int,), "num_experts_per_tok": (int,), "num_experts": (int,),
    "output_router_logits": (bool,), "layer_types": ("list[str]", _NONE), "pad_token_id": (int, _NONE),
    "bos_token_id": (int, _NONE), "eos_token_id": (int, "list[int]", _NONE), "head_dim": (int,),
    "attention_bias": (bool,), "lm_head_bias": (bool,), "router_hidden_size": (int,), "cca_time0": (int,),
    "cca_time1": (int,), "id2label": (dict, _NONE),  # PreTrainedConfig's own fields are not type-checked
}
MAX_LAYERS = 100_000  # a bound on the layer list a config may make us build
_READ_ONLY = ("is_heterogeneous", "per_layer_attributes", "use_return_dict")  # properties without a setter
_POSITIVE = ("vocab_size", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "num_experts",
             "moe_intermediate_size", "cca_time0", "cca_time1", "num_hidden_layers", "router_hidden_size")


@dataclasses.dataclass(frozen=True)
class ZayaDims:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    moe_intermediate_size: int
    router_hidden_size: int
    rms_norm_eps: float
    cca_time0: int
    cca_time1: int
    layer_types: tuple[str, ...]
    rope_theta: dict[str, float]
    partial_rotary_factor: dict[str, float]
    sliding_window: int | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    lm_head_bias: bool
    attention_bias: bool
    bos_token_id: int | None
    eos_token_id: int | list[int] | None
    pad_token_id: int | None
    hidden_act: str = "silu"
    rope_type: dict[str, str] = dataclasses.field(default_factory=dict)  # layer type -> rope_type; absent: default
    # layer type -> the parameters its rope type reads (yarn's "truncate": the top level's, as transformers reads it)
    rope_scaling: dict[str, dict[str, float | bool | list[float] | None]] = dataclasses.field(default_factory=dict)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def conv_channels(self) -> int:
        """Channels of the CCA convolution: all query heads then all key heads."""
        return (self.num_heads + self.num_kv_heads) * self.head_dim

    @property
    def conv_state_len(self) -> int:
        """Past time steps the two causal convolutions need."""
        return (self.cca_time0 - 1) + (self.cca_time1 - 1)

    @property
    def value_half(self) -> int:
        """Width of each value projection (current and delayed)."""
        return self.num_kv_heads * self.head_dim // 2

    def rope_kind(self, layer_type: str) -> str:
        return self.rope_type.get(layer_type, "default")

    def rotary_dim(self, layer_type: str) -> int:
        """Leading dims of each head that RoPE rotates: twice the number of inverse frequencies."""
        return 2 * rope_frequencies(self.rope_kind(layer_type), self.head_dim, self.partial_rotary_factor[layer_type],
                                    self.rope_scaling.get(layer_type, {}))

    @property
    def kv_bytes_per_token(self) -> int:
        """fp32 key+value bytes one context token costs over all layers (Manifest.kv_bytes_per_token:
        in the artifact's cache dtype)."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * 4

    @property
    def fixed_state_bytes(self) -> int:
        """fp32 bytes of the conv and delayed-value states of one sequence (context independent)."""
        return self.num_layers * (self.conv_channels * self.conv_state_len + self.value_half) * 4

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, cfg: dict) -> "ZayaDims":
        """The dims of a config.json's dict; what transformers would refuse is refused here."""
        if not isinstance(cfg, dict):
            raise CheckpointError(f"a ZAYA config is a JSON object, got {json_kind(cfg)}")
        if cfg.get("model_type") != "zaya":
            raise CheckpointError(f"not a ZAYA config: model_type is {cfg.get('model_type')!r}, expected 'zaya'")
        _check_finite(cfg)
        for name, kinds in FIELD_TYPES.items():
            if name in cfg and not any(_is(cfg[name], k) for k in kinds):
                expected = " or ".join(_NAMES.get(k, repr(k)) for k in kinds)
                raise CheckpointError(f"config field {name} is {json_kind(cfg[name])}; "
                                      f"transformers' ZayaConfig expects {expected}")
        _check_extras(cfg)
        layer_types = _layer_types(cfg, cfg.get("num_hidden_layers", _DEFAULTS["num_hidden_layers"]))
        get = lambda name: layer_types if name == "layer_types" else cfg.get(name, _DEFAULTS[name])  # noqa: E731
        _check_architecture(get)
        rope = _rope_settings(cfg, layer_types, get("head_dim"), get("max_position_embeddings"))
        fields = {f.name: get(_CONFIG_KEYS.get(f.name, f.name)) for f in dataclasses.fields(cls) if f.name not in rope}
        return cls(**{**fields, "layer_types": layer_types}, **rope)

    @classmethod
    def from_file(cls, path: str | Path) -> "ZayaDims":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"no config.json at {path}") from None
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from None
        return cls.from_dict(json_object(raw, str(path), CheckpointError))

    @property
    def eos_token_ids(self) -> list[int]:
        return eos_id_list(self.eos_token_id)  # the field's type was checked when it was read


_CONFIG_KEYS = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                "num_kv_heads": "num_key_value_heads"}  # ZayaDims field -> config key where they differ
_DEFAULTS = {
    "layer_types": None, "vocab_size": 262272, "hidden_size": 2048, "num_hidden_layers": 40, "num_attention_heads": 8,
    "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "sliding_window": None, "moe_intermediate_size": 2048, "num_experts_per_tok": 1,
    "num_experts": 16, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 106, "head_dim": 128,
    "attention_bias": False, "lm_head_bias": False, "router_hidden_size": 256, "cca_time0": 2, "cca_time1": 2,
}


# ---- JSON values and field types ---------------------------------------------------------------
_NAMES = {**JSON_NAMES, "list[str]": "a list of strings", "list[int]": "a list of integers"}


def _is(value, kind) -> bool:
    """`value` matches one annotation of FIELD_TYPES, as huggingface_hub's strict dataclasses check it."""
    if kind in ("list[str]", "list[int]"):
        return type(value) is list and all(type(v) is (str if kind == "list[str]" else int) for v in value)
    return type(value) is kind


def _check_finite(cfg: dict) -> None:
    """NaN and infinities are not JSON (Python's parser lets them through): refused wherever they are."""
    stack = [("", cfg)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"config field {where or 'value'} is {value}: a config's numbers must be finite")
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))


def _check_extras(cfg: dict) -> None:
    """What PreTrainedConfig does with keys that are not fields, and with its own fields."""
    if any(name in cfg for name in _READ_ONLY):
        raise CheckpointError(f"config keys {', '.join(_READ_ONLY)} are read-only properties of transformers' config")
    if cfg.get("per_layer_config") not in (None, {}):
        raise CheckpointError("config key per_layer_config (a heterogeneous per-layer config) is not supported")
    dtype = cfg.get("dtype") if cfg.get("dtype") is not None else cfg.get("torch_dtype")
    if isinstance(dtype, list) or isinstance(dtype, str) and dtype not in TORCH_DTYPES:
        raise CheckpointError(f"config dtype {dtype!r} is not a torch dtype")
    labels = cfg.get("id2label")
    if labels is not None and not all(re.fullmatch(r"\s*[+-]?\d+(_\d+)*\s*", str(k)) for k in labels):
        raise CheckpointError("config field id2label must map integer ids (as strings) to labels")
    if labels is None and "num_labels" in cfg and type(cfg["num_labels"]) not in (int, bool):
        raise CheckpointError(f"config key num_labels is {json_kind(cfg['num_labels'])}, expected an integer")
    if isinstance(cfg.get("output_hidden_states"), str):
        raise CheckpointError("config field output_hidden_states is a string, expected a boolean")
    for key, names in IMPLEMENTATIONS.items():
        given = cfg.get(key, cfg.get("_" + key))
        if given is not None and not isinstance(given, dict) and given not in names:  # a dict: per sub-config
            raise CheckpointError(f"config {key} {given!r} is not one transformers has ({', '.join(names)})")
    n_labels = len(labels) if isinstance(labels, dict) else cfg.get("num_labels", 2)
    if cfg.get("problem_type") == "single_label_classification" and n_labels == 1:
        raise CheckpointError("config problem_type single_label_classification needs more than one label")
    if cfg.get("output_attentions") and cfg.get("attn_implementation") not in ("eager", None):
        raise CheckpointError("config output_attentions=true needs attn_implementation 'eager'")


# ---- ZayaConfig's validators and what ZayaForCausalLM needs --------------------------------------
def _layer_types(cfg: dict, n_layers: int) -> tuple[str, ...]:
    given = cfg.get("layer_types")
    if n_layers > MAX_LAYERS:
        raise CheckpointError(f"num_hidden_layers={n_layers} is beyond any model (at most {MAX_LAYERS})")
    types = tuple(["hybrid"] * max(n_layers, 0) if given is None else given)
    if len(types) != n_layers:
        raise CheckpointError(f"num_hidden_layers ({n_layers}) must equal the number of layer_types ({len(types)})")
    other = [t for t in types if t not in LAYER_TYPES]
    if other:
        raise CheckpointError(f"layer_types entry {other[0]!r}: ZayaModel builds hybrid and hybrid_sliding layers only")
    return types


def _check_architecture(get) -> None:
    """ZayaConfig's validators, then what ZayaForCausalLM needs to be built and run."""
    hq, hkv, sliding = get("num_attention_heads"), get("num_key_value_heads"), "hybrid_sliding" in get("layer_types")
    if get("num_experts_per_tok") != 1:
        raise CheckpointError(f"ZAYA supports num_experts_per_tok=1 only, got {get('num_experts_per_tok')}")
    if hkv == 0 or hq % hkv:
        raise CheckpointError(f"num_attention_heads ({hq}) must be a multiple of num_key_value_heads ({hkv})")
    if sliding and get("sliding_window") is None:
        raise CheckpointError("layer_types has hybrid_sliding layers but sliding_window is not set")
    for name in _POSITIVE:
        if get(name) < (0 if name in ("num_hidden_layers", "router_hidden_size") else 1):
            raise CheckpointError(f"{name}={get(name)}: ZayaForCausalLM cannot be built with it (too small)")
    if sliding and get("sliding_window") < 1:
        raise CheckpointError(f"sliding_window={get('sliding_window')}: transformers' sliding mask needs one key")
    vocab, pad = get("vocab_size"), get("pad_token_id")
    if pad is not None and not -vocab <= pad < vocab:
        raise CheckpointError(f"pad_token_id={pad} is outside the embedding's {vocab} rows (nn.Embedding refuses it)")
    if hkv * get("head_dim") % 2:
        raise CheckpointError("num_key_value_heads * head_dim must be even: ZAYA's value is two halves of it")
    if get("hidden_act") not in ACTIVATIONS:
        raise CheckpointError(f"hidden_act {get('hidden_act')!r} is not an activation transformers knows")


# ---- RoPE per layer type ---------------------------------------------------------------------------
def _rope_source(cfg: dict):
    """rope_parameters as ZayaConfig leaves it: defaults for null, a top-level rope_type dropped, and a
    legacy `rope_scaling` key (set after them) replacing it."""
    rope = cfg.get("rope_parameters")
    rope = json.loads(json.dumps(DEFAULT_ROPE)) if rope is None else dict(rope)
    if rope.get("rope_type") is not None:
        del rope["rope_type"]
    if "rope_scaling" in cfg:
        rope = cfg["rope_scaling"]
    if not isinstance(rope, dict):
        raise CheckpointError(f"rope_scaling is {json_kind(rope)}: ZayaForCausalLM needs per-layer-type rope parameters")
    return rope


def _rope_settings(cfg: dict, layer_types: tuple[str, ...], head_dim: int, max_pos: int) -> dict:
    """theta, partial_rotary_factor, type and scaling parameters of each layer type in use."""
    rope, used = _rope_source(cfg), sorted(set(layer_types))
    kinds = {lt: _rope_kind(lt, rope.get(lt)) for lt in used}
    out = {"rope_theta": {}, "partial_rotary_factor": {}, "rope_type": {}, "rope_scaling": {}}
    for n, lt in enumerate(used):
        params = dict(rope[lt])
        missing = [k for k in ROPE_KEYS[kinds[lt]][0] if k not in params]
        if missing:
            raise CheckpointError(f"rope_parameters.{lt} of rope_type {kinds[lt]!r} lacks {missing[0]}")
        if any(k != "default" for k in kinds.values()):
            _standardize(params, cfg, lt, kinds[lt] == "default" and all(kinds[t] == "default" for t in used[:n]))
        if "rope_theta" not in params:
            raise CheckpointError(f"rope_parameters.{lt} has no rope_theta (transformers' default RoPE needs it)")
        theta = _number(params["rope_theta"], f"rope_parameters.{lt}.rope_theta")
        partial = _number(params.get("partial_rotary_factor", 1.0), f"rope_parameters.{lt}.partial_rotary_factor")
        scaling = {k: _scaling_value(kinds[lt], k, params[k], lt) for k in sum(ROPE_KEYS[kinds[lt]], ())
                   if k in params and k != "rope_theta"}
        if kinds[lt] == "yarn":
            scaling["truncate"] = bool(rope.get("truncate", True))
        _check_rotary(kinds[lt], head_dim, partial, scaling, lt, max_pos)
        out["rope_theta"][lt], out["partial_rotary_factor"][lt] = float(theta), float(partial)
        if kinds[lt] != "default":
            out["rope_type"][lt], out["rope_scaling"][lt] = kinds[lt], scaling
    return out


def _rope_kind(lt: str, params) -> str:
    if not isinstance(params, dict):
        raise CheckpointError(f"rope_parameters has no object for {lt} layers (got {json_kind(params)})")
    kind = params.get("rope_type", params.get("type", "default"))
    if not isinstance(kind, str) or kind not in ROPE_KEYS:
        raise CheckpointError(f"rope_parameters.{lt}.rope_type {kind!r} is not a RoPE type transformers has")
    return kind


def _standardize(params: dict, cfg: dict, lt: str, before: bool) -> None:
    """transformers' standardize_rope_params, which the non-default RoPE types run: a missing
    rope_theta (partial_rotary_factor) comes from the config's top-level key of that name."""
    if before and "rope_theta" not in params:
        raise CheckpointError(f"rope_parameters.{lt} has no rope_theta (transformers' default RoPE needs it)")
    params.setdefault("rope_theta", cfg.get("rope_theta"))
    if cfg.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", cfg["partial_rotary_factor"])


def _number(value, where: str) -> float:
    if type(value) not in (int, float, bool):
        raise CheckpointError(f"{where} is {json_kind(value)}, expected a number")
    return float(value)


def _scaling_value(kind: str, key: str, value, lt: str):
    where = f"rope_parameters.{lt}.{key}"
    if key in ("short_factor", "long_factor"):
        if type(value) is not list:
            raise CheckpointError(f"{where} is {json_kind(value)}, expected a list of numbers")
        return [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None and key in _NULLABLE.get(kind, ()):
        return None
    return _number(value, where)


def _check_rotary(kind: str, head_dim: int, partial: float, scaling: dict, lt: str, max_pos: int) -> None:
    if not math.isfinite(head_dim * partial):
        raise CheckpointError(f"rope_parameters.{lt}: head_dim * partial_rotary_factor is not finite")
    if head_dim > 4 and head_dim % 2 and int(head_dim * partial) == head_dim:
        raise CheckpointError(f"RoPE requires an even rotary dimension, but head_dim={head_dim} is fully rotated")
    if kind == "dynamic" and (int(head_dim * partial) == 2 or max_pos == 0):
        raise CheckpointError(f"dynamic RoPE of {lt} layers divides by zero in transformers (rotary dim 2 or "
                              "max_position_embeddings 0)")
    width = 2 * rope_frequencies(kind, head_dim, partial, scaling)
    if width > head_dim:
        raise CheckpointError(f"RoPE of {lt} layers rotates {width} dims of a {head_dim}-dim head "
                              "(transformers fails on the shape mismatch)")


def rope_frequencies(kind: str, head_dim: int, partial: float, scaling: dict) -> int:
    """How many inverse frequencies transformers' RoPE init of `kind` returns (broadcasting as torch
    does); CheckpointError where it fails."""
    if kind == "proportional":
        angles = int(partial * head_dim // 2)
        if angles < 0:
            raise CheckpointError("proportional RoPE with a negative partial_rotary_factor fails in transformers")
        return max(angles, head_dim // 2)
    dim = int(head_dim * partial)
    if dim < 0:
        raise CheckpointError("a negative partial_rotary_factor gives transformers an empty, reversed RoPE range")
    n = len(range(0, dim, 2))
    if kind == "yarn":
        n = _broadcast(n, dim // 2, "yarn's ramp")
    if kind == "longrope":
        n = {_broadcast(n, len(scaling[k]), k) for k in ("short_factor", "long_factor")}
        if len(n) != 1:
            raise CheckpointError("longrope's short_factor and long_factor give frequency tables of different sizes")
        n = n.pop()
    return n


def _broadcast(n: int, m: int, what: str) -> int:
    if n != m and 1 not in (n, m):
        raise CheckpointError(f"{what} has {m} entries where the RoPE has {n} frequencies (transformers fails)")
    return m if n == 1 else n


def eos_id_list(eos) -> list[int] | None:
    """A config's eos_token_id (an id, a list of ids or null) as a list; None if it is neither."""
    items = eos if isinstance(eos, list) else [eos]
    if not all(e is None or (type(e) is int) for e in items):
        return None
    return [e for e in items if e is not None]
