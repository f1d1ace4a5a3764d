"""`quality`, `inspect`, the demo and the set-up as a person meets them: a report only when asked,
precision in words, a warning for a context the artifact cannot run, commands that paste."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from test_runtime_cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quantized(tiny_checkpoint, tmp_path_factory):
    from zaya_edge.export import export_model

    root = tmp_path_factory.mktemp("quantized")
    export_model(tiny_checkpoint[1], root / "int4", precision="int4", progress=False)
    export_model(tiny_checkpoint[1], root / "int8", precision="int8", block_size=64, asymmetric=True,
                 quant_method="rtn", lm_head="int4", progress=False)
    return root


def test_quality_writes_a_report_only_when_asked(tiny_artifact, tmp_path):
    art = tiny_artifact[1]
    before = sorted(art.parent.iterdir())
    proc = cli("quality", art, "--reference", art, "--length", "8")
    assert proc.returncode == 0 and "top-1 agreement" in proc.stdout, proc.stderr
    assert sorted(art.parent.iterdir()) == before
    out = tmp_path / "q.json"
    asked = cli("quality", art, "--reference", art, "--length", "8", "--json", out)
    assert asked.returncode == 0 and out.is_file() and f"wrote {out}" in asked.stdout


def test_inspect_prints_precision_in_words(quantized, tiny_artifact):
    from zaya_edge.export import options

    def precision(folder):
        proc = cli("inspect", folder)
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if line.startswith("precision")).split(None, 1)[1]

    assert precision(quantized / "int4") == (f"int4, block {options.DEFAULT_BLOCK_SIZE}, symmetric, "
                                             f"{options.DEFAULT_METHOD}; lm_head int4")
    assert precision(quantized / "int8") == "int8, block 64, asymmetric, rtn; lm_head int4"
    assert precision(tiny_artifact[1]) == "fp32"


def test_inspect_warns_of_a_context_beyond_the_artifact(tiny_artifact):
    beyond = cli("inspect", tiny_artifact[1], "--context", "100000")
    assert beyond.returncode == 0 and "memory" in beyond.stdout
    assert beyond.stderr.startswith("warning: --context 100000 exceeds the artifact's context length 512")
    within = cli("inspect", tiny_artifact[1], "--context", "256")
    assert within.returncode == 0 and within.stderr == ""
    default = cli("inspect", tiny_artifact[1])  # the default estimate stays within the artifact's context
    assert default.returncode == 0 and default.stderr == "" and "at context 512 x batch 1" in default.stdout


def _demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_the_demo_echoes_commands_that_paste_and_says_where_the_artifacts_are(monkeypatch, capsys):
    demo = _demo()
    ran = []
    monkeypatch.setattr(demo.subprocess, "run", lambda argv, check: ran.append(argv))
    monkeypatch.chdir(ROOT)
    demo.zaya_edge("run", demo.shown(demo.WORK / "tiny-reasoner-int4"), demo.QUESTION, "--stop", "it's")
    line = capsys.readouterr().out.strip()
    assert line.startswith("$ zaya-edge run .cache/demo/tiny-reasoner-int4 'What is")
    assert shlex.split(line[2:])[1:] == ran[0][3:]  # what the reader pastes is what ran
    end = demo.where(demo.WORK / "tiny-reasoner-int4", demo.WORK / "tiny-reasoner-fp32")
    assert "artifacts: .cache/demo/tiny-reasoner-int4 (int4) and .cache/demo/tiny-reasoner-fp32 (fp32)" in end
    readme = (ROOT / "README.md").read_text()
    assert ".cache/demo/tiny-reasoner-int4" in readme and ". .venv/bin/activate" in readme


def test_the_big_install_shows_progress():
    recipe = (ROOT / "Makefile").read_text().split("$(BIN)/.installed: pyproject.toml", 1)[1].split("\n\n", 1)[0]
    install = next(line for line in recipe.splitlines() if "pip install" in line and "-e" in line)
    assert " -q" not in install and recipe.count("@echo") >= 3
