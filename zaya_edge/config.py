"""The model's dimensions, read from a ZAYA `config.json` without transformers.

Exporter and runtime both need the same derived sizes (conv channels, state shapes, rope
settings); deriving them in one place keeps the two sides from drifting apart.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from zaya_edge.errors import CheckpointError

LAYER_TYPES = ("hybrid", "hybrid_sliding")
DEFAULT_ROPE = {
    "hybrid": {"rope_theta": 5_000_000.0, "partial_rotary_factor": 0.5},
    "hybrid_sliding": {"rope_theta": 10_000.0, "partial_rotary_factor": 0.5},
}


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

    def rotary_dim(self, layer_type: str) -> int:
        return int(self.head_dim * self.partial_rotary_factor[layer_type])

    @property
    def kv_bytes_per_token(self) -> int:
        """fp32 key+value bytes one context token costs over all layers."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * 4

    @property
    def fixed_state_bytes(self) -> int:
        """fp32 bytes of the conv and delayed-value states of one sequence (context independent)."""
        return self.num_layers * (self.conv_channels * self.conv_state_len + self.value_half) * 4

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, cfg: dict) -> "ZayaDims":
        """The dims of a config.json's dict; what the exporter cannot build is refused here."""
        if cfg.get("model_type") != "zaya":
            raise CheckpointError(
                f"not a ZAYA config: model_type is {cfg.get('model_type')!r}, expected 'zaya'"
            )
        n_layers = int(cfg.get("num_hidden_layers", 40))
        layer_types = tuple(cfg.get("layer_types") or ["hybrid"] * n_layers)
        unknown = sorted(set(layer_types) - set(LAYER_TYPES))
        if unknown or len(layer_types) != n_layers:
            raise CheckpointError(f"unsupported layer_types {unknown or layer_types!r}")
        if int(cfg.get("num_experts_per_tok", 1)) != 1:
            raise CheckpointError("ZAYA export supports num_experts_per_tok = 1 only")
        if cfg.get("attention_bias", False):
            raise CheckpointError("attention_bias=True is not supported (ZAYA1 has no projection biases)")
        theta, partial = _rope_settings(cfg.get("rope_parameters") or {})
        dims = cls(
            vocab_size=int(cfg.get("vocab_size", 262272)),
            hidden_size=int(cfg.get("hidden_size", 2048)),
            num_layers=n_layers,
            num_heads=int(cfg.get("num_attention_heads", 8)),
            num_kv_heads=int(cfg.get("num_key_value_heads", 2)),
            head_dim=int(cfg.get("head_dim", 128)),
            num_experts=int(cfg.get("num_experts", 16)),
            moe_intermediate_size=int(cfg.get("moe_intermediate_size", 2048)),
            router_hidden_size=int(cfg.get("router_hidden_size", 256)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            cca_time0=int(cfg.get("cca_time0", 2)),
            cca_time1=int(cfg.get("cca_time1", 2)),
            layer_types=layer_types,
            rope_theta=theta,
            partial_rotary_factor=partial,
            sliding_window=cfg.get("sliding_window"),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 131072)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            lm_head_bias=bool(cfg.get("lm_head_bias", False)),
            attention_bias=False,
            bos_token_id=cfg.get("bos_token_id", 2),
            eos_token_id=cfg.get("eos_token_id", 106),
            pad_token_id=cfg.get("pad_token_id", 0),
        )
        dims._check_exportable()
        return dims

    def _check_exportable(self) -> None:
        """Shapes onnxruntime's fused attention cannot take (issue: lift these)."""
        if self.head_dim % 8:
            raise CheckpointError(f"head_dim must be a multiple of 8 (GroupQueryAttention), got {self.head_dim}")
        for lt in set(self.layer_types):
            if (self.rotary_dim(lt) // 2) % 8:
                raise CheckpointError(
                    f"rotary width {self.rotary_dim(lt)} of {lt} layers is unsupported: GroupQueryAttention "
                    "needs head_dim * partial_rotary_factor / 2 to be a multiple of 8"
                )
        if "hybrid_sliding" in self.layer_types and not self.sliding_window:
            raise CheckpointError("layer_types has hybrid_sliding layers but sliding_window is not set")

    @classmethod
    def from_file(cls, path: str | Path) -> "ZayaDims":
        path = Path(path)
        try:
            cfg = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"no config.json at {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{path} is not a JSON object")
        return cls.from_dict(cfg)

    @property
    def eos_token_ids(self) -> list[int]:
        return eos_id_list(self.eos_token_id) or []


def _rope_settings(rope: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(rope_theta, partial_rotary_factor) per layer type, defaults filled in."""
    theta, partial = {}, {}
    for lt in LAYER_TYPES:
        params = {**DEFAULT_ROPE[lt], **(rope.get(lt) or {})}
        if params.get("rope_type", "default") != "default":
            raise CheckpointError(f"unsupported rope_type {params['rope_type']!r} for {lt} layers")
        theta[lt] = float(params["rope_theta"])
        partial[lt] = float(params.get("partial_rotary_factor", 1.0))
    return theta, partial


def eos_id_list(eos) -> list[int] | None:
    """A config's eos_token_id (an id, a list of ids or null) as a list; None if it is neither."""
    items = eos if isinstance(eos, list) else [eos]
    if not all(e is None or (type(e) is int) for e in items):
        return None
    return [e for e in items if e is not None]
