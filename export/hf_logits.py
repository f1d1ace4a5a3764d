"""Reference logits from a Hugging Face checkpoint folder, for `zaya-edge quality`.

Lives on the export side because it needs torch and transformers; the quality module imports
it only when the reference is a checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from transformers import AutoModelForCausalLM


class HFLogits:
    """Logits of a Hugging Face checkpoint folder in fp32 (needs torch and transformers)."""

    def __init__(self, folder: str | Path):
        self._torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.vocab_size = int(self.model.config.vocab_size)

    def rows(self, ids: np.ndarray) -> Iterator[np.ndarray]:
        with self._torch.no_grad():
            logits = self.model(self._torch.as_tensor(ids[None])).logits[0]
        for row in logits:
            yield row.numpy()
