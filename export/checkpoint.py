"""Read a ZAYA checkpoint one tensor at a time.

Sources: a Hugging Face folder (model.safetensors or shards + index), a live
`ZayaForCausalLM`, or its state_dict. Every source answers the same three questions —
which tensors, what shape, and the fp32 values of one tensor — so the graph builder never
holds more than the tensor it is writing.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from zaya_edge.config import ZayaDims
from zaya_edge.errors import CheckpointError, RequestError, ZayaEdgeError

# safetensors' numpy backend cannot return bf16 (numpy has no such dtype) and its torch
# backend would make torch a hard requirement for reading. The format is a little-endian u64
# header length, a JSON header of {name: {dtype, shape, data_offsets}}, then raw bytes, so we
# read the bytes of one tensor (or a row range of it) and convert bf16 to fp32 ourselves (the
# top 16 bits of an fp32).
_SAFETENSORS_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "BOOL": np.bool_,
}
_TORCH_DTYPES = {"torch.float32": "F32", "torch.bfloat16": "BF16", "torch.float16": "F16"}
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


_READ_VALUES = 1 << 24  # values per read: 32-64 MB of raw bytes in flight


def _widen(raw: np.ndarray, dtype: str, out: np.ndarray) -> None:
    """raw values -> fp32 into `out` (bf16 is the top half of an fp32)."""
    if dtype == "BF16":
        wide = out.view(np.uint32)
        wide[...] = raw
        wide <<= 16
    else:
        out[...] = raw


def _dims(read, source) -> ZayaDims:
    """The checkpoint's dims; a config the exporter cannot take is the checkpoint's fault here
    (ZayaDims raises the plain base error: the runtime reads configs too)."""
    try:
        return read(source)
    except ZayaEdgeError as exc:
        raise CheckpointError(str(exc)) from exc


class _SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path.name} is not a readable safetensors file: {exc}") from None
        self.data_start = 8 + n
        header.pop("__metadata__", None)
        self.entries = header

    def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        """fp32 values of one tensor, or of rows [start, stop) of its first axis."""
        e = self.entries[name]
        np_dtype = _SAFETENSORS_DTYPES.get(e["dtype"])
        if np_dtype is None:
            raise CheckpointError(f"tensor {name} has unsupported dtype {e['dtype']}")
        shape = list(e["shape"])
        start, end = e["data_offsets"]
        itemsize = np.dtype(np_dtype).itemsize
        count = (end - start) // itemsize
        if rows is not None:
            row = count // shape[0] if shape[0] else 0
            start += rows[0] * row * itemsize
            shape[0] = rows[1] - rows[0]
            count = shape[0] * row
        # plain reads into one fp32 buffer: a memory map would add the raw bytes to the RSS
        out = np.empty(count, np.float32)
        buf = np.empty(min(count, _READ_VALUES), np_dtype)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + start)
            for i in range(0, count, _READ_VALUES):
                chunk = buf[: min(_READ_VALUES, count - i)]
                if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                    raise CheckpointError(f"{self.path.name} is truncated: tensor {name} runs past its end")
                _widen(chunk, e["dtype"], out[i : i + len(chunk)])
        return out.reshape(shape)


class Checkpoint:
    """Tensor names, shapes and fp32 values, one tensor at a time."""

    dims: ZayaDims
    config: dict
    folder: Path | None = None  # set for on-disk sources (tokenizer files, hashes)
    files: list[Path] = []
    # transformers' from_pretrained resets the skip class's balancing bias to -1.0 whatever
    # the file holds; a folder export must do the same to match the model users load. A live
    # module is exported as it is.
    resets_skip_bias: bool = False

    def names(self) -> set[str]:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        """fp32 numpy array of one tensor."""
        raise NotImplementedError

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """fp32 rows [start, stop) of a tensor's first axis (big tensors are quantized in slices)."""
        return self.read(name)[start:stop]

    def dtype(self, name: str) -> str:
        """The stored dtype in safetensors spelling (F32, BF16, F16, ...)."""
        raise NotImplementedError

    def has(self, name: str) -> bool:
        return name in self.names()


class FolderCheckpoint(Checkpoint):
    """A Hugging Face checkpoint folder: config.json plus safetensors (single or sharded)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder} is not a checkpoint folder")
        self.folder = folder
        self.resets_skip_bias = True
        self.dims = _dims(ZayaDims.from_file, folder / "config.json")
        self.config = json.loads((folder / "config.json").read_text())
        index = folder / "model.safetensors.index.json"
        single = folder / "model.safetensors"
        if index.exists():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            shard_names = sorted(set(weight_map.values()))
            missing = [s for s in shard_names if not (folder / s).exists()]
            if missing:
                raise CheckpointError(f"checkpoint shard {missing[0]} listed in the index is missing")
            shards = {s: _SafetensorsFile(folder / s) for s in shard_names}
            self._where = {name: shards[s] for name, s in weight_map.items()}
            self.files = [folder / s for s in shard_names] + [index]
        elif single.exists():
            f = _SafetensorsFile(single)
            self._where = {name: f for name in f.entries}
            self.files = [single]
        else:
            pickles = [p for p in PICKLE_FILES if (folder / p).exists()]
            if pickles or list(folder.glob("pytorch_model-*.bin")):
                raise CheckpointError(
                    f"{folder} holds only a pickle checkpoint ({pickles[0] if pickles else 'pytorch_model-*.bin'}); "
                    "pickles can run arbitrary code and are refused — convert it to safetensors first"
                )
            raise CheckpointError(f"{folder} has no model.safetensors or model.safetensors.index.json")
        self.files.append(folder / "config.json")

    def names(self) -> set[str]:
        return set(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._where[name].entries[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        return self._where[name].read(name)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._where[name].read(name, (start, stop))

    def dtype(self, name: str) -> str:
        return self._where[name].entries[name]["dtype"]


class StateDictCheckpoint(Checkpoint):
    """A live module's state_dict (torch tensors); each is converted when it is read."""

    def __init__(self, state_dict: dict, config: dict):
        self.config = dict(config)
        self.dims = _dims(ZayaDims.from_dict, self.config)
        self._sd = state_dict

    @classmethod
    def from_module(cls, model) -> "StateDictCheckpoint":
        config = model.config.to_dict()
        return cls(model.state_dict(), config)

    def names(self) -> set[str]:
        return set(self._sd)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._sd[name].shape)

    def read(self, name: str) -> np.ndarray:
        import torch  # export-only dependency

        return self._sd[name].detach().to(torch.float32).cpu().numpy()

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        import torch

        return self._sd[name][start:stop].detach().to(torch.float32).cpu().numpy()

    def dtype(self, name: str) -> str:
        return _TORCH_DTYPES.get(str(self._sd[name].dtype), "F32")


def open_checkpoint(src, config: dict | None = None) -> Checkpoint:
    """A folder path, a `ZayaForCausalLM`, or a state_dict (with `config`)."""
    if isinstance(src, (str, Path)):
        return FolderCheckpoint(src)
    if isinstance(src, dict):
        if config is None:
            raise RequestError("exporting a state_dict needs its config (a dict or ZayaConfig)")
        if not isinstance(config, dict):
            config = config.to_dict()
        return StateDictCheckpoint(src, config)
    if hasattr(src, "state_dict") and hasattr(src, "config"):
        return StateDictCheckpoint.from_module(src)
    raise RequestError(f"cannot export from a {type(src).__name__}: give a folder, a ZayaForCausalLM or a state_dict")


# ---- the tensors a ZAYA checkpoint must hold -------------------------------------------------
def expected_tensors(dims: ZayaDims) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the exporter reads (optional ones excluded)."""
    H, R, E, I = dims.hidden_size, dims.router_hidden_size, dims.num_experts, dims.moe_intermediate_size
    D, Hq, Hkv, C = dims.head_dim, dims.num_heads, dims.num_kv_heads, dims.conv_channels
    out = {
        "model.embed_tokens.weight": (dims.vocab_size, H),
        "model.input_hidden_states_scale": (H,),
        "model.input_hidden_states_bias": (H,),
        "model.norm.weight": (H,),
    }
    if not dims.tie_word_embeddings:
        out["lm_head.weight"] = (dims.vocab_size, H)
    if dims.lm_head_bias:
        out["lm_head.bias"] = (dims.vocab_size,)
    for i in range(dims.num_layers):
        p = f"model.layers.{i}."
        layer = {
            "input_layernorm.weight": (H,),
            "post_attention_layernorm.weight": (H,),
            "self_attn.qkv_proj.q_proj.weight": (Hq * D, H),
            "self_attn.qkv_proj.k_proj.weight": (Hkv * D, H),
            "self_attn.qkv_proj.v_proj_current.weight": (dims.value_half, H),
            "self_attn.qkv_proj.v_proj_delayed.weight": (dims.value_half, H),
            "self_attn.qkv_proj.conv_qk_depthwise.weight": (C, 1, dims.cca_time0),
            "self_attn.qkv_proj.conv_qk_depthwise.bias": (C,),
            "self_attn.qkv_proj.conv_qk_grouped.weight": (C, D, dims.cca_time1),
            "self_attn.qkv_proj.conv_qk_grouped.bias": (C,),
            "self_attn.qk_norm.temp": (Hkv,),
            "self_attn.o_proj.weight": (H, Hq * D),
            "mlp.gate.down_proj.weight": (R, H),
            "mlp.gate.down_proj.bias": (R,),
            "mlp.gate.router_mlp.norm.weight": (R,),
            "mlp.gate.router_mlp.fc1.weight": (R, R),
            "mlp.gate.router_mlp.fc1.bias": (R,),
            "mlp.gate.router_mlp.fc2.weight": (R, R),
            "mlp.gate.router_mlp.fc2.bias": (R,),
            "mlp.gate.router_mlp.out_proj.weight": (E + 1, R),
            "mlp.experts.gate_up_proj": (E, 2 * I, H),
            "mlp.experts.down_proj": (E, H, I),
        }
        if i > 0:
            layer["mlp.gate.router_states_scale"] = (R,)
        for block in ("post_attention_residual_scale", "post_mlp_residual_scale"):
            for t in ("hidden_states_scale", "hidden_states_bias", "residual_scale", "residual_bias"):
                layer[f"{block}.{t}"] = (H,)
        out.update({p + k: v for k, v in layer.items()})
    return out


def check_tensors(ckpt: Checkpoint) -> None:
    """Fail early, naming the tensor, before anything is written."""
    names = ckpt.names()
    for name, shape in expected_tensors(ckpt.dims).items():
        if name not in names:
            raise CheckpointError(f"checkpoint is missing tensor {name}")
        got = ckpt.shape(name)
        if tuple(got) != tuple(shape):
            raise CheckpointError(f"tensor {name} has shape {list(got)}, config implies {list(shape)}")
    for i in range(ckpt.dims.num_layers):
        name = f"model.layers.{i}.mlp.gate.balancing_biases"
        if name in names and tuple(ckpt.shape(name)) != (ckpt.dims.num_experts + 1,):
            raise CheckpointError(
                f"tensor {name} has shape {list(ckpt.shape(name))}, config implies [{ckpt.dims.num_experts + 1}]"
            )
