"""lm-eval (lm-evaluation-harness), which nobody here wrote, drives `zaya-edge serve` and agrees with
`zaya-edge eval` on the tiny reasoner's held-out problems. Opt-in (~45 s, and lm-eval is a heavy
install kept out of the project's venv): set LM_EVAL_PYTHON to an interpreter with lm-eval[api]."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from serve_helpers import ROOT, artifact  # noqa: F401  (fixture)

LM_EVAL_PYTHON = os.environ.get("LM_EVAL_PYTHON")


@pytest.mark.skipif(not LM_EVAL_PYTHON, reason="opt-in: set LM_EVAL_PYTHON to a python with lm-eval[api] installed")
def test_lm_eval_through_the_server_matches_zaya_edge_eval(artifact):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "lm_eval" / "run.py"), str(artifact), "--limit", "40",
                        "--python", LM_EVAL_PYTHON], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "the same" in r.stdout, r.stdout + r.stderr[-3000:]
