"""zaya_edge.runtime: run a zaya-edge artifact with onnxruntime, numpy and tokenizers only.

Never imports torch, transformers or anything from zaya_edge.export.
"""

from .chat import ChatSession
from .engine import Engine
from .generation import Generation, GenerationStats
from .types import BatchProgress, Completion, Request, SamplingParams

__all__ = [
    "BatchProgress", "ChatSession", "Completion", "Engine", "Generation",
    "GenerationStats", "Request", "SamplingParams",
]
