"""The layers, as the tree shows them, hold in the imports (ARCHITECTURE.md).

    zaya_edge/*.py   the contract (errors, config, artifact, manifest, custom-op loader)
    runtime/         zaya_edge.runtime: onnxruntime + numpy + tokenizers, never torch
    export/          zaya_edge.export: torch, transformers, onnx-ir
    zaya_edge/app/   the only layer that imports both export and runtime (and __main__.py)
    zaya_edge/hf/    an adapter beside the app layer: runtime + transformers, never the exporter
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {  # folder -> the dotted name it is imported as
    "zaya_edge": "zaya_edge",
    "runtime": "zaya_edge.runtime",
    "export": "zaya_edge.export",
}
TORCH_SIDE = ("torch", "transformers", "onnx", "onnx_ir", "safetensors")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    dotted = [PACKAGES[rel.parts[0]], *rel.parts[1:-1]]
    if path.stem != "__init__":
        dotted.append(path.stem)
    return ".".join(dotted)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (relative imports resolved), at any depth in the file."""
    module = _module_name(path)
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _layer_files(layer: str) -> list[Path]:
    entry = ROOT / "zaya_edge" / "__main__.py"  # `python -m zaya_edge`: the command, so the app layer
    if layer == "contract":
        return sorted(p for p in (ROOT / "zaya_edge").glob("*.py") if p != entry)
    if layer == "app":
        return sorted((ROOT / "zaya_edge" / "app").rglob("*.py")) + [entry]
    if layer == "hf":
        return sorted((ROOT / "zaya_edge" / "hf").rglob("*.py"))
    return sorted((ROOT / layer).rglob("*.py"))


def _offenders(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in _layer_files(layer):
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


@pytest.mark.parametrize("layer, forbidden", [
    ("contract", ("zaya_edge.export", "zaya_edge.runtime", "zaya_edge.app", "zaya_edge.hf", *TORCH_SIDE)),
    ("runtime", ("zaya_edge.export", "zaya_edge.app", "zaya_edge.hf", *TORCH_SIDE)),
    ("export", ("zaya_edge.runtime", "zaya_edge.app", "zaya_edge.hf")),
    ("hf", ("zaya_edge.export", "zaya_edge.app")),
])
def test_layer_imports(layer, forbidden):
    assert _offenders(layer, forbidden) == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The scan itself: a runtime module importing torch or the exporter is caught."""
    fake = tmp_path / "runtime"
    fake.mkdir()
    (fake / "bad.py").write_text("import torch\nfrom ..export import writer\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert _offenders("runtime", ("zaya_edge.export", "torch")) == [
        "runtime/bad.py imports torch", "runtime/bad.py imports zaya_edge.export", "runtime/bad.py imports zaya_edge.export.writer"]


def test_only_the_app_layer_imports_both_sides():
    both = [p for layer in ("contract", "runtime", "export", "hf") for p in _layer_files(layer)
            if any(n.startswith("zaya_edge.export") for n in _imports(p))
            and any(n.startswith("zaya_edge.runtime") for n in _imports(p))]
    assert both == []
    app = {n for p in _layer_files("app") for n in _imports(p)}
    assert any(n.startswith("zaya_edge.export") for n in app) and any(n.startswith("zaya_edge.runtime") for n in app)


def _module_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (top-level statements, `if`/`try` blocks too)."""
    found, todo = set(), list(ast.parse(path.read_text(), str(path)).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", []) + \
                [n for h in getattr(node, "handlers", []) for n in h.body]
    return found


def test_nothing_in_zaya_edge_needs_torch_to_import():
    """Every module of the zaya_edge folder (the hf adapter and the app layer too) imports
    without torch, transformers or optimum: those are imported where a function needs them."""
    heavy = ("torch", "transformers", "optimum")
    offenders = [f"{p.relative_to(ROOT)} imports {n}" for p in sorted((ROOT / "zaya_edge").rglob("*.py"))
                 for n in sorted(_module_level_imports(p)) if n.split(".")[0] in heavy]
    assert offenders == []
