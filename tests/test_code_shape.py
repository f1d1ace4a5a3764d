"""Small modules with one idea each: the size limits the project keeps (ARCHITECTURE.md).

A module over ~400 lines or a library function over ~50 usually holds two ideas; this keeps the
limits from drifting one commit at a time. Lines are counted as written (docstrings included).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_LINES = 400
FUNCTION_LINES = 50
LIBRARY = ("zaya_edge", "runtime", "export")
EVERYTHING = LIBRARY + ("tests", "benchmarks", "examples")


def _python_files(folders) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if ".venv" not in p.parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def long_modules(files, limit=MODULE_LINES) -> list[str]:
    return [f"{_rel(p)}: {n} lines" for p in files if (n := len(p.read_text().splitlines())) > limit]


def long_functions(files, limit=FUNCTION_LINES) -> list[str]:
    out = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if (n := node.end_lineno - start + 1) > limit:
                    out.append(f"{_rel(path)}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_module_over_the_limit():
    assert long_modules(_python_files(EVERYTHING)) == []


def test_no_library_function_over_the_limit():
    assert long_functions(_python_files(LIBRARY)) == []


def test_the_limits_are_measured(tmp_path):
    """The counters themselves: a long module and a long (decorated) function are reported."""
    f = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    f.write_text("import functools\n\n@functools.cache\ndef big():\n" + body + "\n")
    assert long_functions([f], limit=50) == ["m.py:4 big: 62 lines"]
    assert long_functions([f], limit=62) == []
    assert long_modules([f], limit=50) == ["m.py: 64 lines"]
