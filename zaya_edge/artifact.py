"""The artifact contract: the one definition of what an exported folder holds, and `Artifact`,
the only way anything reads one.

The exporter writes through this module and the runtime (and quality, bench, the tests) read
through `Artifact`, so file names, graph IO names, state shapes and the manifest live here::

    model.onnx            the decoder graph (prefill and decode)
    model.onnx.data       its weights (external data)
    zaya_edge.json        the manifest (manifest.py)
    config.json           the source model's config
    generation_config.json
    genai_config.json     so onnxruntime-genai can load the same folder
    tokenizer.json, ...   when the source had them

    Artifact.open(folder) ─ manifest parsed and typed ─ listed files present at their sizes
        ├─ .path(name)        a file the manifest lists (nothing else is ever opened)
        ├─ .eos_token_ids     generation_config.json, else the model's dims
        ├─ .tokenizer_files   tokenizer.json, its config and chat template, when listed
        ├─ .verify()          every listed file against its sha256
        └─ .open_session()    onnxruntime session: pinned optimisation, custom ops, IO checked
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from zaya_edge.config import ZayaDims, eos_id_list
from zaya_edge.errors import ArtifactError
from zaya_edge.graph_io import *  # noqa: F401,F403  (the graph IO names are part of the contract)
from zaya_edge.typed_json import json_object
from zaya_edge.manifest import FORMAT_VERSION, MANIFEST_FILE, PRECISIONS, FileRecord, Manifest  # noqa: F401

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
GENAI_CONFIG_FILE = "genai_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    "special_tokens_map.json",
    CHAT_TEMPLATE_FILE,
    "tokenizer.model",
)

# The private operator domain of ZAYA's routing and attention ops (function bodies in the model; native
# kernels in custom_ops/ replace them when that library is registered).
ZAYA_DOMAIN = "ai.zaya"
ROUTER_OP = "Router"
ATTENTION_OP = "CachedAttention"
EXPERT_MOE_OP = "ExpertMoE"  # the experts of a layer on their stored int4 blocks (export/moe_op.py)
# The manifest's quantization["experts"]: one ExpertMoE node per layer ("fused") or the stock
# QMoE / MatMulNBits graph ("portable"; artifacts older than the key are portable).
EXPERTS_FUSED, EXPERTS_PORTABLE = "fused", "portable"

MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KiB; anything near this is not one


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> FileRecord:
    return FileRecord(bytes=path.stat().st_size, sha256=sha256_file(path))


class Artifact:
    """An opened artifact folder: its typed manifest and the files it lists."""

    def __init__(self, folder: Path, manifest: Manifest, manifest_sha256: str):
        self.folder = folder
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256  # names the model: what an RSA checkpoint records

    @classmethod
    def open(cls, folder: str | Path, *, verify: bool = False) -> "Artifact":
        """Parse the manifest and check every listed file is there at its size (hashes: `verify`)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ArtifactError(f"{folder} is not an artifact folder")
        path = folder / MANIFEST_FILE
        if not path.exists():
            raise ArtifactError(f"{folder} has no {MANIFEST_FILE}: not a zaya-edge artifact")
        raw = _read_bounded(_confined(folder, MANIFEST_FILE), MAX_MANIFEST_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"{path} is not UTF-8 text: not a zaya-edge manifest") from None
        artifact = cls(folder, Manifest.parse(text, str(path)), hashlib.sha256(raw).hexdigest())
        artifact._check_sizes()
        if verify:
            artifact.verify()
        return artifact

    def _check_sizes(self) -> None:
        for name, record in self.manifest.files.items():
            size = _confined(self.folder, name).stat().st_size
            if size != record.bytes:
                raise ArtifactError(
                    f"artifact file {name} is {size} bytes, manifest says {record.bytes}: truncated or replaced"
                )

    def verify(self) -> None:
        """Full integrity check (slow on big artifacts: reads every byte)."""
        if not self.manifest.files:
            raise ArtifactError(f"{self.folder}: the manifest lists no files, so nothing can be verified")
        for name, record in self.manifest.files.items():
            if sha256_file(self.path(name)) != record.sha256:
                raise ArtifactError(f"artifact file {name} does not match its manifest hash: corrupt")

    # ---- facts ----------------------------------------------------------------------------
    @property
    def dims(self) -> ZayaDims:
        return self.manifest.dims

    @property
    def context_length(self) -> int:
        return self.manifest.context_length

    def has(self, name: str) -> bool:
        return name in self.manifest.files

    def path(self, name: str) -> Path:
        """A file the manifest lists; anything else is refused (the folder may hold strays)."""
        if name not in self.manifest.files:
            raise ArtifactError(f"{self.folder} does not list {name} in its manifest")
        return _confined(self.folder, name)

    @property
    def experts(self) -> str:
        """EXPERTS_FUSED or EXPERTS_PORTABLE: how the export emitted the int4 experts."""
        value = self.manifest.quantization.get("experts", EXPERTS_PORTABLE)
        if value not in (EXPERTS_FUSED, EXPERTS_PORTABLE):
            raise ArtifactError(f"{MANIFEST_FILE}: quantization.experts must be {EXPERTS_FUSED!r} or "
                                f"{EXPERTS_PORTABLE!r}, got {value!r}")
        return value

    @property
    def weight_bytes(self) -> int:
        return sum(r.bytes for n, r in self.manifest.files.items() if n in (MODEL_FILE, DATA_FILE))

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.manifest.files.values())

    @property
    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids: generation_config.json's when listed, else the model config's."""
        eos = self.dims.eos_token_id
        if self.has(GENERATION_CONFIG_FILE):
            gen_cfg = self._read_json(GENERATION_CONFIG_FILE)
            eos = gen_cfg.get("eos_token_id", eos)
        ids = eos_id_list(eos)
        if ids is None or not all(0 <= e < self.dims.vocab_size for e in ids):
            raise ArtifactError(f"{GENERATION_CONFIG_FILE}: eos_token_id must be token ids, got {eos!r}")
        return ids

    @property
    def tokenizer_files(self) -> dict[str, Path] | None:
        """tokenizer.json and, when listed, its config and chat template; None without a tokenizer."""
        if not self.has(TOKENIZER_FILE):
            return None
        names = (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE)
        return {n: self.path(n) for n in names if self.has(n)}

    def _read_json(self, name: str) -> dict:
        return json_object(_read_bounded(self.path(name), MAX_MANIFEST_BYTES), f"{name} in {self.folder}")

    # ---- running ---------------------------------------------------------------------------
    def open_session(self, *, threads: int | None = None, provider: str = "cpu", custom_ops: str | bool | None = None):
        """An onnxruntime session over the graph (see ort_session.open_decoder_session)."""
        from zaya_edge.ort_session import open_decoder_session

        return open_decoder_session(self, threads=threads, provider=provider, custom_ops=custom_ops)


def _confined(folder: Path, name: str) -> Path:
    """`folder/name` if it is a plain file name of a regular file inside `folder`, else ArtifactError.

    An artifact may come from anywhere: a listed name with a separator or `..`, or a symlink
    whose target lies outside the folder, could make the runtime read any file on the machine.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ArtifactError(f"the manifest of {folder} lists {name!r}: not a plain file name")
    path = folder / name
    if not path.exists():
        raise ArtifactError(f"artifact file {name} is missing from {folder}")
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except OSError as exc:
        raise ArtifactError(f"artifact file {name} cannot be resolved: {exc}") from None
    if not inside:
        raise ArtifactError(f"artifact file {name} leads outside {folder} (a symlink): refused")
    if not path.is_file():
        raise ArtifactError(f"artifact file {name} in {folder} is not a regular file")
    return path


def _read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a small, already confined file, refused before reading when larger than `limit`."""
    size = path.stat().st_size
    if size > limit:
        raise ArtifactError(f"{path} is {size} bytes, more than the {limit} a {path.name} can be")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None

