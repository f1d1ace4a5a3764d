"""The artifact contract: the one definition of what an exported folder holds.

The exporter writes through this module and the runtime reads through it, so file names,
graph input/output names, state shapes and the manifest's format version live here only.

An artifact folder::

    model.onnx            the decoder graph (prefill and decode)
    model.onnx.data       its weights (external data)
    zaya_edge.json        the manifest (this module's `Manifest`)
    config.json           the source model's config
    generation_config.json
    genai_config.json     so onnxruntime-genai can load the same folder
    tokenizer.json, ...   when the source had them
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from zaya_edge.config import ZayaDims
from zaya_edge.errors import ZayaEdgeError

FORMAT_VERSION = 1

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
MANIFEST_FILE = "zaya_edge.json"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
GENAI_CONFIG_FILE = "genai_config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)

# The private operator domain of ZAYA's routing ops (function bodies in the model; native
# kernels in custom_ops/ replace them when that library is registered).
ZAYA_DOMAIN = "ai.zaya"
ROUTER_OP = "Router"

PRECISIONS = ("fp32", "int8", "int4")

# ---- graph IO names (onnxruntime-genai style templates) --------------------------------------
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"
PAST_KEY = "past_key_values.%d.key"
PAST_VALUE = "past_key_values.%d.value"
PAST_CONV = "past_conv.%d"
PAST_RECURRENT = "past_recurrent.%d"
PRESENT_KEY = "present.%d.key"
PRESENT_VALUE = "present.%d.value"
PRESENT_CONV = "present_conv.%d"
PRESENT_RECURRENT = "present_recurrent.%d"

STATE_KINDS = ("key", "value", "conv", "recurrent")
PAST_NAMES = {"key": PAST_KEY, "value": PAST_VALUE, "conv": PAST_CONV, "recurrent": PAST_RECURRENT}
PRESENT_NAMES = {
    "key": PRESENT_KEY,
    "value": PRESENT_VALUE,
    "conv": PRESENT_CONV,
    "recurrent": PRESENT_RECURRENT,
}


def state_shape(dims: ZayaDims, kind: str, batch, length) -> tuple:
    """Shape of one layer's state of `kind`; `length` is the key/value time axis."""
    if kind in ("key", "value"):
        return (batch, dims.num_kv_heads, length, dims.head_dim)
    if kind == "conv":
        return (batch, dims.conv_channels, dims.conv_state_len)
    if kind == "recurrent":
        return (batch, dims.value_half)
    raise ValueError(kind)


def io_spec(dims: ZayaDims, all_logits: bool) -> tuple[list[tuple], list[tuple]]:
    """(inputs, outputs) as (name, dtype, shape) with symbolic dims as strings.

    Semantics: `attention_mask` is [batch, past + sequence] with 1 for real tokens; every row
    shares the same column positions (left padding and holes are masked, never compacted), so
    the new tokens of all rows go to the same cache columns. The key/value past may be a
    longer preallocated buffer (shared past/present buffer); the mask's width says how much
    of it is in use.
    """
    inputs = [
        (INPUT_IDS, "int64", ("batch", "sequence")),
        (ATTENTION_MASK, "int64", ("batch", "total_sequence")),
    ]
    outputs = [(LOGITS, "float32", ("batch", "sequence" if all_logits else 1, dims.vocab_size))]
    for i in range(dims.num_layers):
        for kind in STATE_KINDS:
            inputs.append((PAST_NAMES[kind] % i, "float32", state_shape(dims, kind, "batch", "past_sequence")))
            outputs.append(
                (PRESENT_NAMES[kind] % i, "float32", state_shape(dims, kind, "batch", "present_sequence"))
            )
    return inputs, outputs


@dataclasses.dataclass
class Manifest:
    """What the exporter promises about an artifact; validated before any session is made."""

    format_version: int
    precision: str
    quantization: dict
    all_logits: bool
    context_length: int
    dims: dict
    inputs: list
    outputs: list
    ops: dict
    files: dict
    source: dict
    versions: dict

    @property
    def model_dims(self) -> ZayaDims:
        return ZayaDims.from_dict({"model_type": "zaya", **self.dims})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ZayaEdgeError(
                f"artifact format version {version} is not supported by this zaya-edge "
                f"(expects {FORMAT_VERSION}); re-export the model with this version"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise ZayaEdgeError(f"manifest is missing fields: {', '.join(missing)}")
        return cls(**{k: data[k] for k in names})


def dims_to_config_dict(dims: ZayaDims) -> dict:
    """The config.json keys that reproduce `dims` (stored in the manifest)."""
    return {
        "vocab_size": dims.vocab_size,
        "hidden_size": dims.hidden_size,
        "num_hidden_layers": dims.num_layers,
        "num_attention_heads": dims.num_heads,
        "num_key_value_heads": dims.num_kv_heads,
        "head_dim": dims.head_dim,
        "num_experts": dims.num_experts,
        "moe_intermediate_size": dims.moe_intermediate_size,
        "router_hidden_size": dims.router_hidden_size,
        "rms_norm_eps": dims.rms_norm_eps,
        "cca_time0": dims.cca_time0,
        "cca_time1": dims.cca_time1,
        "layer_types": list(dims.layer_types),
        "rope_parameters": {
            lt: {"rope_type": "default", "rope_theta": dims.rope_theta[lt],
                 "partial_rotary_factor": dims.partial_rotary_factor[lt]}
            for lt in dims.rope_theta
        },
        "sliding_window": dims.sliding_window,
        "max_position_embeddings": dims.max_position_embeddings,
        "tie_word_embeddings": dims.tie_word_embeddings,
        "lm_head_bias": dims.lm_head_bias,
        "bos_token_id": dims.bos_token_id,
        "eos_token_id": dims.eos_token_id,
        "pad_token_id": dims.pad_token_id,
    }


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_manifest(folder: str | Path) -> Manifest:
    """Read and check the manifest: version, and that every listed file is there at its size."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ZayaEdgeError(f"{folder} is not an artifact folder")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZayaEdgeError(f"{folder} has no {MANIFEST_FILE}: not a zaya-edge artifact") from None
    except json.JSONDecodeError as exc:
        raise ZayaEdgeError(f"{path} is corrupt: {exc}") from None
    manifest = Manifest.from_dict(data)
    for name, record in manifest.files.items():
        f = folder / name
        if not f.exists():
            raise ZayaEdgeError(f"artifact file {name} is missing from {folder}")
        if f.stat().st_size != record["bytes"]:
            raise ZayaEdgeError(
                f"artifact file {name} is {f.stat().st_size} bytes, manifest says {record['bytes']}: "
                "truncated or replaced"
            )
    return manifest


def verify_hashes(folder: str | Path, manifest: Manifest) -> None:
    """Full integrity check (slow on big artifacts: reads every byte)."""
    folder = Path(folder)
    for name, record in manifest.files.items():
        digest = sha256_file(folder / name)
        if digest != record["sha256"]:
            raise ZayaEdgeError(f"artifact file {name} does not match its manifest hash: corrupt")
