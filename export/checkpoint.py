"""Read a ZAYA checkpoint one tensor at a time.

Sources: a Hugging Face folder (model.safetensors or shards + index), a live
`ZayaForCausalLM`, or its state_dict. Every source answers the same three questions —
which tensors, what shape, and the fp32 values of one tensor — so the graph builder never
holds more than the tensor it is writing.

A checkpoint folder is untrusted input: every file read from it must be a regular file inside
it (`confined`), JSON files are bounded before they are parsed, a safetensors header must
describe a file that holds exactly its tensors, and weights must be finite floats.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePosixPath

import numpy as np

from zaya_edge import artifact as A
from zaya_edge.config import ZayaDims
from zaya_edge.errors import CheckpointError, RequestError, ZayaEdgeError
from zaya_edge.typed_json import json_object

from .safetensors_file import FLOAT_DTYPES, SafetensorsFile, finite, not_float

_TORCH_DTYPES = {"torch.float32": "F32", "torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float64": "F64"}
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
INDEX_FILE = "model.safetensors.index.json"
SIDE_FILES = (A.GENERATION_CONFIG_FILE,) + A.TOKENIZER_FILES  # copied into the artifact when present

# Sizes past any real checkpoint's: refused before anything is parsed or copied.
CONFIG_LIMIT = 8 << 20  # config.json, generation_config.json
INDEX_LIMIT = 64 << 20  # model.safetensors.index.json
SIDE_LIMIT = 64 << 20  # tokenizer files


def confined(folder: Path, name, limit: int | None = None) -> Path:
    """The real path of file `name` of `folder`; a name that leaves the folder (absolute, `..`, a
    symlink out), a missing file, a FIFO/device/folder or one over `limit` bytes is refused, so a
    checkpoint cannot make the exporter read, or copy into an artifact, anything else."""
    if not _relative(name):
        raise CheckpointError(f"checkpoint file name {name!r} points outside the checkpoint folder {folder}: refused")
    where = folder / name
    try:
        real = where.resolve()
        inside = real.is_relative_to(folder.resolve()) or _hub_blob(folder.resolve(), real)
        info = os.stat(real) if inside else None
    except FileNotFoundError:
        raise CheckpointError(f"{where} is missing") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise CheckpointError(f"cannot read {where}: {exc}") from None
    if info is None:
        raise CheckpointError(f"{where} is a symlink to {real}, outside the checkpoint folder: refused")
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{where} is not a regular file")
    if limit is not None and info.st_size > limit:
        raise CheckpointError(f"{where} is {info.st_size} bytes, over the {limit >> 20} MiB such a file may have")
    return real


def _relative(name) -> bool:
    """A plain relative name below the folder: no absolute path, no `..`, no NUL."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    try:
        name.encode("utf-8")  # a lone surrogate cannot name a file
    except UnicodeEncodeError:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def _hub_blob(root: Path, real: Path) -> bool:
    """A Hugging Face cache snapshot (<repo>/snapshots/<rev>/) links its files to <repo>/blobs/."""
    return root.parent.name == "snapshots" and real.parent == root.parent.parent / "blobs"


def _present(folder: Path, name: str) -> bool:
    """There is an entry `name` (a dangling symlink too: `confined` then says what is wrong)."""
    return os.path.lexists(folder / name)


def load_json(folder: Path, name: str, limit: int) -> dict:
    """A checkpoint's JSON file as a dict, confined and bounded before it is parsed."""
    try:
        raw = confined(folder, name, limit).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {folder / name}: {exc}") from None
    return json_object(raw, str(folder / name), CheckpointError)


def _dims(read, source) -> ZayaDims:
    """The checkpoint's dims; a config the exporter cannot take is the checkpoint's fault here
    (ZayaDims raises the plain base error: the runtime reads configs too)."""
    try:
        return read(source)
    except ZayaEdgeError as exc:
        raise CheckpointError(str(exc)) from exc


class Checkpoint:
    """Tensor names, shapes and fp32 values, one tensor at a time."""

    dims: ZayaDims
    config: dict
    folder: Path | None = None  # set for on-disk sources (tokenizer files, hashes)
    files: list[Path] = []
    side_files: dict[str, Path] = {}  # name -> real path of the files copied into the artifact
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
        if not _present(folder, A.CONFIG_FILE):
            raise CheckpointError(f"no config.json at {folder / A.CONFIG_FILE}")
        self.config = load_json(folder, A.CONFIG_FILE, CONFIG_LIMIT)
        self.dims = _dims(ZayaDims.from_dict, self.config)
        if _present(folder, INDEX_FILE):
            self._where, shard_names = self._sharded(folder)
            self.files = [folder / s for s in shard_names] + [folder / INDEX_FILE]
        elif _present(folder, "model.safetensors"):
            f = SafetensorsFile(confined(folder, "model.safetensors"), "model.safetensors")
            self._where = {name: f for name in f.entries}
            self.files = [folder / "model.safetensors"]
        else:
            _refuse_pickles(folder)
            raise CheckpointError(f"{folder} has no model.safetensors or {INDEX_FILE}")
        self.files.append(folder / A.CONFIG_FILE)
        self.side_files = {n: confined(folder, n, SIDE_LIMIT) for n in SIDE_FILES if _present(folder, n)}
        if A.GENERATION_CONFIG_FILE in self.side_files:
            load_json(folder, A.GENERATION_CONFIG_FILE, CONFIG_LIMIT)  # the runtime reads it: an object

    @staticmethod
    def _sharded(folder: Path) -> tuple[dict, list[str]]:
        """(tensor -> its shard, shard names) from the index; every shard confined and checked."""
        weight_map = load_json(folder, INDEX_FILE, INDEX_LIMIT).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
            raise CheckpointError(f"{folder / INDEX_FILE} has no weight_map of tensor -> shard file names")
        shard_names = sorted(set(weight_map.values()))
        shards = {s: SafetensorsFile(confined(folder, s), s) for s in shard_names}
        for name, s in weight_map.items():
            if name not in shards[s].entries:
                raise CheckpointError(f"{INDEX_FILE} places tensor {name} in {s}, which does not hold it")
        return {name: shards[s] for name, s in weight_map.items()}, shard_names

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


def _refuse_pickles(folder: Path) -> None:
    pickles = [p for p in PICKLE_FILES if (folder / p).exists()]
    if pickles or list(folder.glob("pytorch_model-*.bin")):
        raise CheckpointError(
            f"{folder} holds only a pickle checkpoint ({pickles[0] if pickles else 'pytorch_model-*.bin'}); "
            "pickles can run arbitrary code and are refused — convert it to safetensors first"
        )


class StateDictCheckpoint(Checkpoint):
    """A live module's state_dict (torch tensors); each is converted, and checked, when it is read."""

    def __init__(self, state_dict: dict, config: dict):
        self.config = json.loads(json.dumps(config, default=str))  # as a config.json holds it
        self.dims = _dims(ZayaDims.from_dict, self.config)
        self._sd = state_dict

    @classmethod
    def from_module(cls, model) -> "StateDictCheckpoint":
        """The module's config as its config.json would hold it (JSON types, every field)."""
        return cls(model.state_dict(), json.loads(model.config.to_json_string(use_diff=False)))

    def names(self) -> set[str]:
        return set(self._sd)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._sd[name].shape)

    def read(self, name: str) -> np.ndarray:
        return self._values(name, self._sd[name])

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._values(name, self._sd[name][start:stop])

    def _values(self, name: str, tensor) -> np.ndarray:
        import torch  # export-only dependency

        if not tensor.dtype.is_floating_point:
            raise CheckpointError(not_float(name, str(tensor.dtype)))
        return finite(name, tensor.detach().to(torch.float32).cpu().numpy())

    def dtype(self, name: str) -> str:
        return _TORCH_DTYPES.get(str(self._sd[name].dtype), str(self._sd[name].dtype))


def open_checkpoint(src, config: dict | None = None) -> Checkpoint:
    """A folder path, a `ZayaForCausalLM`, or a state_dict (with `config`)."""
    if isinstance(src, (str, Path)):
        return FolderCheckpoint(src)
    if isinstance(src, dict):
        if config is None:
            raise RequestError("exporting a state_dict needs its config (a dict or ZayaConfig)")
        if not isinstance(config, dict):
            config = json.loads(config.to_json_string(use_diff=False))
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
        if dims.attention_bias:
            layer.update(_attention_biases(layer))
        for block in ("post_attention_residual_scale", "post_mlp_residual_scale"):
            for t in ("hidden_states_scale", "hidden_states_bias", "residual_scale", "residual_bias"):
                layer[f"{block}.{t}"] = (H,)
        out.update({p + k: v for k, v in layer.items()})
    return out


def _attention_biases(layer: dict) -> dict[str, tuple[int, ...]]:
    """attention_bias=True: every projection of the attention has a bias of its output width."""
    names = [f"self_attn.qkv_proj.{p}" for p in ("q_proj", "k_proj", "v_proj_current", "v_proj_delayed")]
    return {f"{n}.bias": (layer[f"{n}.weight"][0],) for n in names + ["self_attn.o_proj"]}


def check_tensors(ckpt: Checkpoint) -> None:
    """Fail early, naming the tensor, before anything is written."""
    names = ckpt.names()
    wanted = expected_tensors(ckpt.dims)
    for i in range(ckpt.dims.num_layers):
        name = f"model.layers.{i}.mlp.gate.balancing_biases"
        if name in names:  # optional: transformers resets it when absent
            wanted[name] = (ckpt.dims.num_experts + 1,)
    for name, shape in wanted.items():
        if name not in names:
            raise CheckpointError(f"checkpoint is missing tensor {name}")
        got = ckpt.shape(name)
        if tuple(got) != tuple(shape):
            raise CheckpointError(f"tensor {name} has shape {list(got)}, config implies {list(shape)}")
        if ckpt.dtype(name) not in FLOAT_DTYPES:
            raise CheckpointError(not_float(name, ckpt.dtype(name)))
