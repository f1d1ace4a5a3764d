"""zaya-edge: run ZAYA1 on laptops and edge devices.

The public API lives here; the exporter (`zaya_edge.export`) needs the `export` extra
(torch, transformers, onnx-ir), the runtime (`zaya_edge.runtime`) needs only onnxruntime,
numpy and tokenizers.
"""

__version__ = "0.1.0"

from zaya_edge.errors import ZayaEdgeError  # noqa: E402

__all__ = ["ZayaEdgeError", "__version__"]
