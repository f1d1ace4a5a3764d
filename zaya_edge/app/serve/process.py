"""A server in a child process on a free loopback port: for tests, the load benchmark and eval scripts.

    with ServerProcess(artifact, "--max-batch", "8") as server:   # ready: GET /health answered
        server.base_url                                              # http://127.0.0.1:PORT/v1
        server.metrics()["zaya_edge_live_sequences"]
        server.rss_bytes()
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`zaya-edge serve ARTIFACT --port P *args` as a child; its output goes to `log` (or is dropped)."""

    def __init__(self, artifact: str | Path, *args: str, log: str | Path | None = None, ready_s: float = 60.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [*[sys.executable, "-m", "zaya_edge", "serve"], str(artifact), "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.log, self.ready_s = Path(log) if log else None, ready_s
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def __enter__(self) -> "ServerProcess":
        out = open(self.log, "w") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        finally:
            if self.log:
                out.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not answer /health in {self.ready_s} s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else "(no log kept)"

    def post(self, path: str, body, key: str | None = None, timeout: float = 60.0) -> tuple[int, dict]:
        """A raw POST (bytes or a JSON-able body): (status, decoded JSON)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metrics(self) -> dict[str, float]:
        """GET /metrics as {sample name (with labels): value}."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            lines = r.read().decode().splitlines()
        return {name: float(value) for name, value in (ln.rsplit(" ", 1) for ln in lines if ln and not ln.startswith("#"))}

    def rss_bytes(self) -> int:
        return int(self.metrics()["process_resident_memory_bytes"])
