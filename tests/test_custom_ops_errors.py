"""A corrupt, foreign or incompatible custom-op library gives a one-line ZayaEdgeError, never a crash.

Every case runs in a subprocess, so a crash shows up as a failed test instead of taking pytest down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zaya_edge import custom_ops

LIB = custom_ops.find_library()
REPO = Path(__file__).resolve().parents[1]
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler to build fake libraries")

PROBE = textwrap.dedent(
    """
    import sys
    import onnxruntime as ort
    from zaya_edge import custom_ops
    from zaya_edge.errors import ZayaEdgeError
    print(custom_ops.describe())
    try:
        so = ort.SessionOptions()
        info = custom_ops.register(so, sys.argv[1] if len(sys.argv) > 1 else None)
        print("REGISTERED", info)
    except ZayaEdgeError as exc:
        print("ZayaEdgeError:", exc)
    """
)


def probe(path=None, env_value=None) -> list[str]:
    """Run register() in a fresh interpreter; returns its output lines (asserting it did not crash)."""
    env = {k: v for k, v in os.environ.items() if k != custom_ops.ENV_VAR}
    if env_value is not None:
        env[custom_ops.ENV_VAR] = str(env_value)
    args = [sys.executable, "-c", PROBE] + ([str(path)] if path is not None else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"crashed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout.strip().splitlines()


def error_of(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("ZayaEdgeError: ")]
    assert errors, f"no ZayaEdgeError: {lines}"
    return errors[0]


def fake_library(tmp_path, source: str) -> Path:
    """Compile a small C shared library."""
    src = tmp_path / "fake.c"
    src.write_text(textwrap.dedent(source))
    out = tmp_path / custom_ops.library_filename()
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def info_exports(abi: int, ort_api: int, register_body: str = "return 0;") -> str:
    return f"""
    #include <stdint.h>
    int ZayaCustomOpsAbiVersion(void) {{ return {abi}; }}
    const char* ZayaCustomOpsBuildInfo(void) {{
        return "{{\\"version\\": \\"9.9\\", \\"abi\\": {abi}, \\"ort_api_version\\": {ort_api}, \\"ops\\": [\\"Router\\"], \\"providers\\": [\\"CPUExecutionProvider\\"], \\"gpu\\": null}}";
    }}
    void ZayaCustomOpsCounters(int64_t* out) {{ for (int i = 0; i < 6; ++i) out[i] = 0; }}
    typedef struct {{ void** (*GetApi)(unsigned); const char* (*GetVersionString)(void); }} ApiBase;
    typedef void* (*CreateStatus)(int, const char*);
    void* RegisterCustomOps(void* options, const ApiBase* base) {{ {register_body} }}
    """


def test_random_bytes(tmp_path):
    path = tmp_path / custom_ops.library_filename()
    path.write_bytes(os.urandom(4096))
    assert "cannot be loaded (corrupt or built for another platform)" in error_of(probe(path))


def test_empty_file(tmp_path):
    path = tmp_path / custom_ops.library_filename()
    path.write_bytes(b"")
    assert "cannot be loaded" in error_of(probe(path))


@pytest.mark.skipif(LIB is None, reason="custom-op library not built (make custom-ops)")
def test_truncated_library(tmp_path):
    path = tmp_path / custom_ops.library_filename()
    path.write_bytes(LIB.read_bytes()[: LIB.stat().st_size // 3])  # dlopen itself would die of SIGBUS
    assert "cannot be loaded (corrupt or built for another platform): truncated" in error_of(probe(path))


def test_missing_file(tmp_path):
    assert "does not exist" in error_of(probe(tmp_path / "nope.so"))


def test_env_var_naming_a_missing_file(tmp_path):
    lines = probe(env_value=tmp_path / "nope.so")
    assert "no such file" in error_of(lines)
    assert lines[0].startswith("custom ops: unusable")  # describe() reports it, does not raise


def test_env_var_disables_native_kernels():
    lines = probe(env_value="0")
    assert lines == ["custom ops: disabled by ZAYA_EDGE_CUSTOM_OPS; the Router and ExpertMoE run their ONNX "
                     "function bodies (fallback)", "REGISTERED None"]


@needs_cc
def test_foreign_library(tmp_path):
    path = fake_library(tmp_path, "int some_function(void) { return 1; }\n")
    assert "is not a zaya-edge custom-op library (missing ZayaCustomOpsAbiVersion)" in error_of(probe(path))


@needs_cc
def test_library_that_crashes_while_loading(tmp_path):
    source = info_exports(abi=custom_ops.ABI_VERSION, ort_api=21) + """
    __attribute__((constructor)) static void crash(void) { *(volatile int*)0 = 1; }
    """
    path = fake_library(tmp_path, source)
    assert "crashes when loaded (SIGSEGV)" in error_of(probe(path))


@needs_cc
def test_other_abi_version(tmp_path):
    path = fake_library(tmp_path, info_exports(abi=99, ort_api=21))
    assert f"has custom-op ABI 99, this zaya-edge needs ABI {custom_ops.ABI_VERSION}" in error_of(probe(path))


@needs_cc
def test_built_against_newer_onnxruntime(tmp_path):
    path = fake_library(tmp_path, info_exports(abi=custom_ops.ABI_VERSION, ort_api=999))
    assert "was built against onnxruntime API 999" in error_of(probe(path))


@needs_cc
def test_registration_refused_by_the_library(tmp_path):
    body = "CreateStatus create = (CreateStatus)base->GetApi(1)[0]; return create(1, \"boom from the library\");"
    path = fake_library(tmp_path, info_exports(abi=custom_ops.ABI_VERSION, ort_api=21, register_body=body))
    err = error_of(probe(path))
    assert "onnxruntime refused custom-op library" in err and "boom from the library" in err


@pytest.mark.skipif(LIB is None, reason="custom-op library not built (make custom-ops)")
def test_real_library_through_env_var():
    lines = probe(env_value=LIB)
    assert "the Router runs natively; CachedAttention runs natively; ExpertMoE runs natively (int8 kernel: " in lines[0]
    assert lines[1].startswith(f"REGISTERED {LIB}")


def _needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


@pytest.mark.skipif(shutil.which("readelf") is None or sys.platform != "linux", reason="needs readelf (Linux)")
@pytest.mark.parametrize("build", ["build", "build-cuda", "build-hip"])
def test_library_does_not_link_onnxruntime(build):
    path = REPO / "custom_ops" / build / custom_ops.library_filename()
    if not path.is_file():
        pytest.skip(f"custom_ops/{build} not built")
    needed = _needed(path)
    assert not [n for n in needed if "onnxruntime" in n], needed
    assert not [n for n in needed if "cudart" in n], needed  # CUDA runtime linked statically: loads without CUDA
