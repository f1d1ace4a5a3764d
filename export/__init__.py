"""zaya_edge.export: ZAYA checkpoint -> ONNX artifact (needs the `export` extra)."""

from .writer import export_model

__all__ = ["export_model"]
