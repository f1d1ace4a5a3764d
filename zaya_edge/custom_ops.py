"""Find and register zaya-edge's native custom-op library (custom_ops/, `make custom-ops`).

Every exported artifact carries the `ai.zaya::Router` operator as an ONNX function (and a fused
int4 export `ai.zaya::ExpertMoE`, one node per layer's experts), so it runs on stock onnxruntime
(the *fallback*: onnxruntime inlines the function body). Registering libzaya_custom_ops on a
session's options makes onnxruntime run the native kernels instead (the *native* path): same
results to ~1e-6, fewer nodes, less time. A library built before ExpertMoE existed still
registers; onnxruntime then runs ExpertMoE's function body (describe() says so).

Torch-free; used by the runtime and by `zaya-edge inspect`::

    so = onnxruntime.SessionOptions()
    info = custom_ops.register(so)          # None when no library is built: fallback
    session = onnxruntime.InferenceSession(path, so, providers=[...])
    print(custom_ops.router_path(session))  # "native (CPUExecutionProvider)" or "fallback (...)"

Where the library is looked for, first hit wins:
  1. `ZAYA_EDGE_CUSTOM_OPS=/path/to/libzaya_custom_ops.so` (must load; `0`/`off` forces the fallback)
  2. `zaya_edge/lib/` (a packaged build)
  3. the repository's build folders: `custom_ops/build-cuda` (only if onnxruntime offers the
     CUDA provider), `custom_ops/build-hip` (only with the ROCm provider), `custom_ops/build`

A library that is corrupt, not ours, of another ABI, or built against newer onnxruntime headers
than the installed runtime raises `ZayaEdgeError` (one line) instead of crashing the process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

from zaya_edge.artifact import ATTENTION_OP, EXPERT_MOE_OP, ROUTER_OP
from zaya_edge.errors import ZayaEdgeError, first_line

ENV_VAR = "ZAYA_EDGE_CUSTOM_OPS"
ABI_VERSION = 2  # must equal ZAYA_CUSTOM_OPS_ABI in custom_ops/src/custom_ops.cc
CONFIG_KEY = "zaya_edge.custom_ops_library"  # session config entry that records the registration
DOMAIN = "ai.zaya"
_DISABLED = {"0", "off", "none", "false", "no"}

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent
_PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider")


def library_filename() -> str:
    """The library's file name on this platform."""
    if sys.platform == "win32":
        return "zaya_custom_ops.dll"
    if sys.platform == "darwin":
        return "libzaya_custom_ops.dylib"
    return "libzaya_custom_ops.so"


@dataclasses.dataclass(frozen=True)
class LibraryInfo:
    """What a loaded library says about itself (its ZayaCustomOpsBuildInfo)."""

    path: Path
    version: str
    abi: int
    ort_api_version: int  # the ONNX Runtime headers it was built against
    ops: tuple[str, ...]
    providers: tuple[str, ...]  # execution providers it has kernels for
    gpu: str | None  # "cuda", "hip" or None

    def __str__(self) -> str:
        kernels = ", ".join(p.replace("ExecutionProvider", "") for p in self.providers)
        return f"{self.path} (v{self.version}, ABI {self.abi}, ORT API {self.ort_api_version}, kernels: {kernels})"


@dataclasses.dataclass(frozen=True)
class RouterPath:
    """Which implementation of an ai.zaya op (the Router, ExpertMoE) a session runs."""

    native: bool
    provider: str | None = None  # the execution provider whose native kernel runs it
    library: Path | None = None
    reason: str = ""  # why the fallback, when it is the fallback

    def __str__(self) -> str:
        if self.native:
            return f"native ({self.provider})"
        return f"fallback ({self.reason})" if self.reason else "fallback"


def candidate_paths() -> list[Path]:
    """Where find_library looks, in order (the env var is handled by find_library)."""
    name = library_filename()
    available = _available_providers()
    paths = [_PACKAGE_DIR / "lib" / name]
    build = _REPO_DIR / "custom_ops"
    if "CUDAExecutionProvider" in available:
        paths.append(build / "build-cuda" / name)
    if "ROCMExecutionProvider" in available:
        paths.append(build / "build-hip" / name)
    paths.append(build / "build" / name)
    return paths


def find_library() -> Path | None:
    """The library to use, or None (fallback). ZAYA_EDGE_CUSTOM_OPS overrides the search."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        if env.lower() in _DISABLED:
            return None
        path = Path(env).expanduser()
        if not path.is_file():
            raise ZayaEdgeError(f"{ENV_VAR}={env}: no such file (unset it to use the ONNX function fallback)")
        return path.resolve()
    for path in candidate_paths():
        if path.is_file():
            return path.resolve()
    return None


_loaded: dict[Path, tuple[ctypes.CDLL, LibraryInfo]] = {}


def _check_elf(path: Path) -> None:
    """Reject a truncated or foreign ELF file before dlopen, which would crash on it (SIGBUS)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
            raise ZayaEdgeError(f"custom-op library {path} cannot be loaded (corrupt or built for another platform): not an ELF file")
        is64, end = head[4] == 2, "<" if head[5] == 1 else ">"
        if is64 != (sys.maxsize > 2**32):
            raise ZayaEdgeError(f"custom-op library {path} cannot be loaded (corrupt or built for another platform): {'64' if is64 else '32'}-bit library, {'64' if not is64 else '32'}-bit Python")
        if is64:
            phoff, shoff = struct.unpack_from(end + "QQ", head, 32)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", head, 54)
        else:
            phoff, shoff = struct.unpack_from(end + "II", head, 28)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", head, 42)
        extents = [phoff + phentsize * phnum, shoff + shentsize * shnum]
        if phoff + phentsize * phnum <= size:
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                if is64:
                    p_offset, _, _, p_filesz = struct.unpack_from(end + "QQQQ", table, i * phentsize + 8)
                else:
                    p_offset, _, _, p_filesz = struct.unpack_from(end + "IIII", table, i * phentsize + 4)
                extents.append(p_offset + p_filesz)
    if max(extents) > size:
        raise ZayaEdgeError(
            f"custom-op library {path} cannot be loaded (corrupt or built for another platform): truncated, "
            f"its contents end at byte {max(extents)} but the file has {size}"
        )


_PROBE = "import ctypes, sys; ctypes.CDLL(sys.argv[1]).ZayaCustomOpsAbiVersion()"


def _probe(path: Path) -> None:
    """dlopen the library in a throw-away interpreter first: a library that crashes the loader
    or its own initialisers takes down that process, not this one."""
    if not sys.executable:
        return
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return  # cannot probe (embedded interpreter, sandbox): load directly
    if proc.returncode < 0:
        try:
            why = signal.Signals(-proc.returncode).name
        except ValueError:
            why = f"signal {-proc.returncode}"
        raise ZayaEdgeError(f"custom-op library {path} crashes when loaded ({why}): corrupt or built for another platform")


def _load(path: str | Path) -> tuple[ctypes.CDLL, LibraryInfo]:
    path = Path(path).expanduser().resolve()
    if path in _loaded:
        return _loaded[path]
    if not path.is_file():
        raise ZayaEdgeError(f"custom-op library {path} does not exist")
    if sys.platform.startswith("linux"):
        _check_elf(path)
    _probe(path)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise ZayaEdgeError(f"custom-op library {path} cannot be loaded (corrupt or built for another platform): {exc}") from None
    try:
        abi_fn, info_fn = lib.ZayaCustomOpsAbiVersion, lib.ZayaCustomOpsBuildInfo
        lib.ZayaCustomOpsCounters, lib.RegisterCustomOps  # noqa: B018 - presence check
    except AttributeError as exc:
        raise ZayaEdgeError(f"{path} is not a zaya-edge custom-op library (missing {exc.args[0].split(':')[-1].strip()})") from None
    abi_fn.restype = ctypes.c_int
    info_fn.restype = ctypes.c_char_p
    abi = abi_fn()
    if abi != ABI_VERSION:
        raise ZayaEdgeError(f"{path} has custom-op ABI {abi}, this zaya-edge needs ABI {ABI_VERSION}: rebuild it (make custom-ops)")
    try:
        raw = json.loads(info_fn().decode())
        info = LibraryInfo(
            path=path, version=str(raw["version"]), abi=int(raw["abi"]), ort_api_version=int(raw["ort_api_version"]),
            ops=tuple(raw["ops"]), providers=tuple(raw["providers"]), gpu=raw.get("gpu"),
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ZayaEdgeError(f"{path} returned unreadable build info ({exc}): rebuild it (make custom-ops)") from None
    _loaded[path] = (lib, info)
    return lib, info


def library_info(path: str | Path | None = None) -> LibraryInfo | None:
    """Load and check a library (default: find_library()); None if none is found."""
    path = find_library() if path is None else path
    return None if path is None else _load(path)[1]


def _ort_api_version() -> int:
    import onnxruntime

    parts = onnxruntime.__version__.split(".")
    return 1000 if int(parts[0]) > 1 else int(parts[1])  # ORT_API_VERSION == the 1.x minor version


def _available_providers() -> list[str]:
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:  # noqa: BLE001 - a broken onnxruntime shows up elsewhere
        return []


def register(session_options, path: str | Path | None = None) -> LibraryInfo | None:
    """Register the native kernels on an onnxruntime.SessionOptions, before creating the session.

    path None: use find_library() and return None (nothing registered: the function fallback)
    when no library is found. An explicit path, or one that ZAYA_EDGE_CUSTOM_OPS names, must
    work. Registering twice on the same options is a no-op. Raises ZayaEdgeError when the
    library cannot be used; the session options are then unchanged.
    """
    if path is None:
        path = find_library()
        if path is None:
            return None
    _, info = _load(path)
    if _config_entry(session_options):
        return info
    runtime_api = _ort_api_version()
    if info.ort_api_version > runtime_api:
        import onnxruntime

        raise ZayaEdgeError(
            f"{info.path} was built against onnxruntime API {info.ort_api_version}, the installed onnxruntime "
            f"{onnxruntime.__version__} provides {runtime_api}: rebuild it with older headers (custom_ops/fetch_ort_headers.sh)"
        )
    try:
        session_options.register_custom_ops_library(str(info.path))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/RuntimeError types
        first = first_line(exc)
        raise ZayaEdgeError(f"onnxruntime refused custom-op library {info.path}: {first}") from None
    session_options.add_session_config_entry(CONFIG_KEY, str(info.path))
    return info


def _config_entry(session_options) -> str:
    try:
        return session_options.get_session_config_entry(CONFIG_KEY) or ""
    except Exception:  # noqa: BLE001 - onnxruntime raises when the key is absent
        return ""


def op_path(session, op: str) -> RouterPath:
    """Whether a session runs the native kernel of `op` (Router, ExpertMoE) or its function body."""
    if op == ROUTER_OP:
        return router_path(session)
    lib = _config_entry(session.get_session_options())
    if not lib:
        return RouterPath(False, reason="no custom-op library registered")
    info = _load(lib)[1]
    if op not in info.ops:
        return RouterPath(False, library=info.path, reason=f"the library predates {op}")
    # ExpertMoE has a CPU kernel only; onnxruntime places it there under any provider
    return RouterPath(True, "CPUExecutionProvider", info.path)


def router_path(session) -> RouterPath:
    """Whether an onnxruntime.InferenceSession runs the native Router kernel or the fallback.

    Native when register() was called on the session's options and one of the session's
    providers, in priority order, has a kernel in the library (onnxruntime gives the node to
    the first provider that has one; a CUDA session with a CPU-only library runs the Router
    natively on the CPU).
    """
    lib = _config_entry(session.get_session_options())
    if not lib:
        return RouterPath(False, reason="no custom-op library registered")
    info = _load(lib)[1]
    for provider in session.get_providers():
        if provider in info.providers:
            return RouterPath(True, provider, info.path)
    return RouterPath(False, library=info.path, reason=f"the library has no kernel for {', '.join(session.get_providers())}")


def native_counters(path: str | Path | None = None) -> dict:
    """Kernels created and Compute calls of the native Router in this process, per provider
    (and of the CPU CachedAttention kernel under "attention").

    Evidence that the native path really ran (the library counts; the fallback never touches it).
    """
    path = find_library() if path is None else path
    if path is None:
        raise ZayaEdgeError("no custom-op library found (make custom-ops, or set ZAYA_EDGE_CUSTOM_OPS)")
    lib, _ = _load(path)
    out = (ctypes.c_int64 * 6)()
    lib.ZayaCustomOpsCounters.restype = None
    lib.ZayaCustomOpsCounters(out)
    attention = (ctypes.c_int64 * 2)()
    lib.ZayaCustomOpsAttentionCounters.restype = None
    lib.ZayaCustomOpsAttentionCounters(attention)
    return {
        "kernels": dict(zip(_PROVIDERS, out[:3])),
        "computes": dict(zip(_PROVIDERS, out[3:])),
        "attention": {"kernels": attention[0], "computes": attention[1]},  # CachedAttention (CPU)
    }


def moe_kernel(path: str | Path | None = None) -> dict | None:
    """ExpertMoE's kernels created and Compute calls in this process, and the int8 kernel this
    CPU runs ({"kernels", "computes", "isa"}); None for a library without ExpertMoE."""
    path = find_library() if path is None else path
    if path is None:
        raise ZayaEdgeError("no custom-op library found (make custom-ops, or set ZAYA_EDGE_CUSTOM_OPS)")
    lib, _ = _load(path)
    try:
        counters, isa = lib.ZayaCustomOpsMoeCounters, lib.ZayaCustomOpsMoeIsa
    except AttributeError:
        return None
    out = (ctypes.c_int64 * 2)()
    counters.restype, isa.restype = None, ctypes.c_char_p
    counters(out)
    return {"kernels": out[0], "computes": out[1], "isa": isa().decode()}


def _experts_note(info: LibraryInfo) -> str:
    if EXPERT_MOE_OP not in info.ops:
        return f"; this library predates {EXPERT_MOE_OP}: fused experts run its function body (rebuild: make custom-ops)"
    isa = (moe_kernel(info.path) or {}).get("isa", "?")
    return f"; {EXPERT_MOE_OP} runs natively (int8 kernel: {isa})"


def describe() -> str:
    """One line for `zaya-edge inspect`: which library would be used, or why the fallback."""
    try:
        info = library_info()
    except ZayaEdgeError as exc:
        return f"custom ops: unusable, the Router would fail to register: {exc}"
    if info is None:
        if os.environ.get(ENV_VAR, "").strip().lower() in _DISABLED:
            return f"custom ops: disabled by {ENV_VAR}; the Router and ExpertMoE run their ONNX function bodies (fallback)"
        return "custom ops: not built (make custom-ops); the Router and ExpertMoE run their ONNX function bodies (fallback)"
    if info.ort_api_version > _ort_api_version():
        return f"custom ops: {info} needs a newer onnxruntime; the Router would fail to register"
    attention = f"; {ATTENTION_OP} runs natively" if ATTENTION_OP in info.ops else ""
    return f"custom ops: {info}; the Router runs natively" + attention + _experts_note(info)
