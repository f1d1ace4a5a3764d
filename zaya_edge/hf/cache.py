"""ZayaStateCache: every state the graph carries between calls, behind transformers' Cache API.

Beside the KV cache each layer has a conv window and a delayed value; all four kinds have the
batch as their first axis, so reordering beams, repeating or selecting rows is one index along
axis 0 of every array. The arrays stay numpy (concat mode: each call's present states become
the next call's past), keyed by the graph's past input names (graph_io.zero_state).
Concat mode costs a copy of the KV cache per call (onnxruntime writes a new present per
layer); the runtime's engine avoids it with preallocated buffers bound in place (runtime/
cache.py). For transformers' generate() on long contexts that copy is the price of this adapter.

Cropping is refused: the conv window and the delayed value of earlier positions are not kept,
so a cache cannot be rolled back (what assisted decoding and DoLa would need).

The methods live in a plain class and `cache_class()` joins them to transformers' `Cache` on
first use, so importing zaya_edge never imports transformers (the runtime runs without it).
"""

from __future__ import annotations

import functools

import numpy as np

from zaya_edge import graph_io as G
from zaya_edge.config import ZayaDims
from zaya_edge.errors import RequestError

from .extra import extra


@functools.cache
def cache_class() -> type:
    """ZayaStateCache: the methods below on transformers' Cache (built once, on first use)."""
    cache = extra("transformers.cache_utils").Cache
    return type("ZayaStateCache", (StateCacheMethods, cache), {"__module__": __name__, "__doc__": StateCacheMethods.__doc__})


class StateCacheMethods:
    """The KV, conv and delayed-value states of a batch; empty until the first forward."""

    def __init__(self, dims: ZayaDims, max_length: int, kv_dtype: str = "float32"):
        super().__init__(layers=[])
        self.dims = dims
        self.kv_dtype = kv_dtype
        self.max_length = max_length
        self.states: dict[str, np.ndarray] | None = None

    # ---- the graph's side ------------------------------------------------------------------
    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        """The past inputs for a call over `batch` rows (zero states before the first call)."""
        if self.states is None:
            return G.zero_state(self.dims, batch, self.kv_dtype)
        if self.batch_size != batch:
            raise RequestError(f"the cache holds {self.batch_size} rows, the call has {batch}")
        return self.states

    def store(self, states: dict[str, np.ndarray]) -> None:
        self.states = states

    # ---- what generate() asks of a cache ------------------------------------------------------
    def __len__(self) -> int:
        return self.dims.num_layers

    def __repr__(self) -> str:
        return f"ZayaStateCache(batch={self.batch_size}, length={self.get_seq_length()})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns held (the attention mask's width so far), shared by every row."""
        return 0 if self.states is None else self.states[G.PAST_KEY % 0].shape[2]

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return self.max_length

    @property
    def batch_size(self) -> int:
        return -1 if self.states is None else self.states[G.PAST_KEY % 0].shape[0]

    def _index(self, rows: np.ndarray) -> None:
        if self.states is not None:
            self.states = {k: np.ascontiguousarray(v[rows]) for k, v in self.states.items()}

    def reorder_cache(self, beam_idx) -> None:
        """Beam search: row i becomes the old row beam_idx[i], for every kind of state."""
        self._index(np.asarray(beam_idx.cpu(), np.int64))

    def batch_select_indices(self, indices) -> None:
        self._index(np.asarray(indices.cpu(), np.int64))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.states is not None:
            self.states = {k: np.repeat(v, repeats, axis=0) for k, v in self.states.items()}

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise RequestError("a ZAYA cache cannot be cropped: the conv and delayed-value states do not roll back")

    def reset(self) -> None:
        self.states = None

    def activate_past_recording(self) -> None:
        raise RequestError("a ZAYA cache cannot record past states: assisted decoding is not supported")

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.states is not None

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * self.dims.num_layers

    @property
    def is_linear(self) -> list[bool]:
        return [False] * self.dims.num_layers  # attention and linear states in one layer: not "linear"

    @property
    def is_dummy(self) -> list[bool]:
        return [False] * self.dims.num_layers
