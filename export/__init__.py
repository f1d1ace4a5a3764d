"""zaya_edge.export: ZAYA checkpoint -> ONNX artifact (needs the `export` extra).

`export_model` is imported on first use, so that `options` (the choices an export offers, which
the CLI lists in its help) can be read where the extra is not installed.
"""

__all__ = ["export_model"]


def __getattr__(name: str):
    if name == "export_model":
        from .writer import export_model

        return export_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
