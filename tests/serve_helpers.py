"""Shared by the test_serve_* modules: the tiny reasoner's artifact and a real server process on loopback."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("openai", reason="the openai client is not installed")

from zaya_edge.app.serve.process import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "examples" / "tiny-reasoner" / "checkpoint"
KEY = "test-key"
MODEL = "tiny-reasoner"

_EXPORTED: dict[str, Path] = {}


def shared_reasoner(tmp_path_factory) -> Path:
    """The committed tiny reasoner exported to fp32, once for every test_serve_* module (needs torch)."""
    if "fp32" not in _EXPORTED:
        pytest.importorskip("torch")
        from zaya_edge.export import export_model

        base = tmp_path_factory.mktemp("serve-reasoner")
        _EXPORTED["fp32"] = export_model(CHECKPOINT, base / MODEL, precision="fp32", progress=False)
    return _EXPORTED["fp32"]


class Server(ServerProcess):
    """The server process, with the openai client and the test's key."""

    def client(self, key: str | None = KEY, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=key or "none", max_retries=0, timeout=60, **kwargs)

    def post(self, path: str, body, key: str | None = KEY, timeout: float = 60.0):
        return super().post(path, body, key, timeout)


@contextlib.contextmanager
def running_server(artifact: Path, log: Path, *args: str):
    """A server on a free loopback port, ready (GET /health) when yielded; stopped after."""
    with Server(artifact, "--model-name", MODEL, "--threads", "1", *args, log=log) as server:
        yield server


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The tiny reasoner's fp32 artifact (import this fixture into a test module)."""
    return shared_reasoner(tmp_path_factory)


def module_server(*args: str):
    """A module-scoped `server` fixture: one process with these flags for the module's tests."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        folder = shared_reasoner(tmp_path_factory)
        with running_server(folder, tmp_path_factory.mktemp("log") / "server.log", *args) as s:
            yield s

    return server


def wait_for(predicate, timeout: float = 10.0, every: float = 0.05):
    """Poll until predicate() is truthy (returns it) or the time is up (returns the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
