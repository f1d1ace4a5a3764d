"""A bare onnxruntime driver for exporter tests: no runtime package, concat-mode cache, the
artifact's own session (Artifact.open_session) with the ai.zaya function bodies."""

from __future__ import annotations

import numpy as np

from zaya_edge import artifact as A


class OrtDecoder:
    def __init__(self, folder, custom_ops=False):
        artifact = A.Artifact.open(folder)
        self.manifest = artifact.manifest
        self.dims = artifact.dims
        # by default the exporter's graph as written: function bodies, not the native kernels
        self.session = artifact.open_session(custom_ops=custom_ops).session
        self.output_names = [o.name for o in self.session.get_outputs()]

    def zero_state(self, batch: int) -> dict:
        return A.zero_state(self.dims, batch, self.manifest.kv_dtype)

    def step(self, ids, mask, state):
        """Run one call; returns (logits, new state keyed by past names)."""
        feed = {A.INPUT_IDS: np.asarray(ids, np.int64), A.ATTENTION_MASK: np.asarray(mask, np.int64), **state}
        outs = dict(zip(self.output_names, self.session.run(None, feed)))
        return outs[A.LOGITS], A.next_state(self.dims, outs)
