"""The manifest (`zaya_edge.json`): what the exporter promises about an artifact, typed.

Read once, at the boundary: `Manifest.parse(text)` checks the JSON against every field's type
(typed_json), then that the promises agree with each other — the graph IO the manifest declares
is the one its dims imply. A wrong field is one `ArtifactError` at load, never a traceback on
the first step. The dims are stored as `ZayaDims`'s own fields, so reading them back is the
same typed decode as every other field.
"""

from __future__ import annotations

import dataclasses
import json

from zaya_edge.config import ZayaDims
from zaya_edge.errors import ArtifactError
from zaya_edge.graph_io import KV_DTYPES, TensorSpec, io_spec  # noqa: F401  (TensorSpec: part of the manifest)
from zaya_edge.typed_json import decode

FORMAT_VERSION = 4  # 2: dims as ZayaDims fields, typed source record; 3: dims gain hidden_act, rope_type,
# rope_scaling; 4: kv_dtype (an fp16 cache: a zaya-edge that reads only 3 would allocate fp32 and fail)
READABLE_VERSIONS = (3, FORMAT_VERSION)  # a v3 artifact is a v4 one with an fp32 cache
PRECISIONS = ("fp32", "int8", "int4")
MANIFEST_FILE = "zaya_edge.json"


@dataclasses.dataclass(frozen=True)
class FileRecord:
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the weights came from: a checkpoint folder (with its files' records) or a live module."""

    kind: str  # "folder" | "module"
    path: str | None = None
    files: dict[str, FileRecord] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Manifest:
    format_version: int
    precision: str
    quantization: dict[str, str | int | bool | None]  # {} for fp32; the export plan's record (its
    # "experts": "fused" | "portable" was added without a version bump: older manifests lack it and
    # read as portable, Artifact.experts)
    all_logits: bool
    context_length: int
    dims: ZayaDims
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: dict[str, dict[str, int]]  # domain -> op type -> node count
    files: dict[str, FileRecord]  # every file of the folder but the manifest itself
    source: Source
    versions: dict[str, str]
    kv_dtype: str = "float32"  # the key/value cache's dtype (graph_io.KV_DTYPES); older manifests: fp32

    @property
    def kv_bytes_per_token(self) -> int:
        """Key+value bytes one context token costs over all layers, in the cache's dtype."""
        return self.dims.kv_bytes_per_token * (2 if self.kv_dtype == "float16" else 4) // 4

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def parse(cls, text: str, where: str = MANIFEST_FILE) -> "Manifest":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # bad JSON, or a number past the digit limit
            raise ArtifactError(f"{where} is corrupt: {exc}") from None
        if isinstance(data, dict) and data.get("format_version") not in READABLE_VERSIONS:
            raise ArtifactError(
                f"artifact format version {data.get('format_version')!r} is not supported by this zaya-edge "
                f"(expects {FORMAT_VERSION}); re-export the model with this version"
            )
        manifest = decode(cls, data, where)
        manifest.check(where)
        return manifest

    def check(self, where: str = MANIFEST_FILE) -> None:
        """The fields agree with each other (types were checked by the decode)."""
        if self.precision not in PRECISIONS:
            raise ArtifactError(f"{where}: unknown precision {self.precision!r}")
        _check_dims(self.dims, where)
        if self.context_length < 1:
            raise ArtifactError(f"{where}: context_length must be positive, got {self.context_length}")
        if self.kv_dtype not in KV_DTYPES:
            raise ArtifactError(f"{where}: kv_dtype must be one of {', '.join(KV_DTYPES)}, got {self.kv_dtype!r}")
        inputs, outputs = io_spec(self.dims, self.all_logits, self.kv_dtype)
        for kind, declared, want in (("input", self.inputs, inputs), ("output", self.outputs, outputs)):
            if list(declared) != want:
                names = {s.name for s in declared}
                missing = [s.name for s in want if s.name not in names] or [
                    s.name for s, d in zip(want, declared) if s != d]
                raise ArtifactError(f"graph {kind}s in {where} do not match the manifest's dims "
                                    f"(missing or different: {missing[:3]}): artifact is inconsistent")
        for name, record in self.files.items():
            if record.bytes < 0 or len(record.sha256) != 64:
                raise ArtifactError(f"{where}: the record of {name} is malformed")


def _check_dims(d: ZayaDims, where: str) -> None:
    sizes = ("vocab_size", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
             "num_experts", "moe_intermediate_size", "router_hidden_size", "cca_time0", "cca_time1")
    bad = [n for n in sizes if getattr(d, n) < 1] + (["num_layers"] if d.num_layers < 0 else [])
    if bad:
        raise ArtifactError(f"{where}: dims.{bad[0]} must be positive, got {getattr(d, bad[0])}")
    if len(d.layer_types) != d.num_layers or d.num_heads % d.num_kv_heads:
        raise ArtifactError(f"{where}: dims are inconsistent (layer_types or head counts)")
    if set(d.layer_types) - set(d.rope_theta) or set(d.layer_types) - set(d.partial_rotary_factor):
        raise ArtifactError(f"{where}: dims lack rope settings for a layer type")
    if set(d.rope_type) - set(d.rope_theta) or set(d.rope_scaling) - set(d.rope_type):
        raise ArtifactError(f"{where}: dims have rope types or scaling for a layer type without rope settings")
