"""The decode state of a batch: KV buffers, CCA conv and delayed-value states, the mask.

Key/value buffers are preallocated [slots, kv_heads, capacity, head_dim] per layer and bound
as both past and present (GroupQueryAttention's shared buffer), so a decode step writes one
column in place and copies nothing. The small conv/delayed-value states alternate between two
buffers (the graph computes them anew each call).

All rows share column positions (the graph's contract); a row's tokens may sit anywhere in
its columns because RoPE positions count real tokens, not columns. Active rows are always the
prefix [0, rows) so that a view of the first rows is contiguous and can be bound directly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from zaya_edge import artifact as A
from zaya_edge.config import ZayaDims
from zaya_edge.errors import ContextFullError

from .session import bind


def bytes_per_sequence(dims: ZayaDims, columns: int, kv_bytes_per_token: int | None = None) -> int:
    """What one slot of `columns` columns allocates (StateCache.nbytes is slots x this): its key and
    value columns (`kv_bytes_per_token`: the artifact's cache dtype, default fp32), both
    conv/recurrent buffers (they alternate between calls) and its mask row."""
    kv = dims.kv_bytes_per_token if kv_bytes_per_token is None else kv_bytes_per_token
    return columns * (kv + np.dtype(np.int64).itemsize) + 2 * dims.fixed_state_bytes


@dataclasses.dataclass
class RowState:
    """A snapshot of one sequence: its real columns only (a versioned, self-contained copy)."""

    key: list[np.ndarray]  # per layer [kv_heads, n, head_dim]
    value: list[np.ndarray]
    conv: list[np.ndarray]  # per layer [channels, k]
    recurrent: list[np.ndarray]  # per layer [value_half]
    tokens: int


class StateCache:
    def __init__(self, dims: ZayaDims, slots: int, capacity: int, max_capacity: int, kv_dtype: str = "float32"):
        self.dims = dims
        self.kv_dtype = np.dtype(kv_dtype)
        self.slots = slots
        self.max_capacity = max_capacity
        self.capacity = 0
        self.columns = 0  # columns in use by the batch (the mask's width)
        self.phase = 0  # which conv/recurrent buffer holds the current state
        kv = (slots, dims.num_kv_heads, 0, dims.head_dim)
        self.key = [np.zeros(kv, self.kv_dtype) for _ in range(dims.num_layers)]
        self.value = [np.zeros(kv, self.kv_dtype) for _ in range(dims.num_layers)]
        self.conv = [np.zeros((2, slots, dims.conv_channels, dims.conv_state_len), np.float32) for _ in range(dims.num_layers)]
        self.recurrent = [np.zeros((2, slots, dims.value_half), np.float32) for _ in range(dims.num_layers)]
        self.mask = np.zeros((slots, 0), np.int64)
        self._grow(capacity)

    # ---- size ---------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        arrays = self.key + self.value + self.conv + self.recurrent + [self.mask]
        return sum(a.nbytes for a in arrays)

    def _grow(self, capacity: int) -> None:
        """Reallocate to `capacity` columns (amortised: callers double)."""
        capacity = min(capacity, self.max_capacity)
        if capacity <= self.capacity:
            return
        c = self.columns
        for group in (self.key, self.value):
            for i, old in enumerate(group):
                new = np.zeros(old.shape[:2] + (capacity,) + old.shape[3:], old.dtype)
                new[:, :, :c] = old[:, :, :c]
                group[i] = new
        mask = np.zeros((self.slots, capacity), np.int64)
        mask[:, :c] = self.mask[:, :c]
        self.mask = mask
        self.capacity = capacity

    def reserve(self, new_columns: int) -> None:
        """Make room for `new_columns` more columns: compact holes, then grow, or fail."""
        need = self.columns + new_columns
        if need <= self.capacity:
            return
        self.defragment()
        need = self.columns + new_columns
        if need > self.max_capacity:
            raise ContextFullError(f"context full: {need} positions needed, the artifact supports {self.max_capacity}")
        if need > self.capacity:
            self._grow(max(need, 2 * self.capacity))

    # ---- binding ------------------------------------------------------------------------
    def bind_state(self, binding, start: int, stop: int) -> None:
        """Bind rows [start, stop)'s per-layer state (past and present) to `binding`.

        The bound buffers stay valid until the cache grows, so a binding made for one
        (rows, phase) can be reused step after step; only the mask, ids and logits change.
        """
        cur, nxt = self.phase, 1 - self.phase
        rows = slice(start, stop)
        for i in range(self.dims.num_layers):
            k, v = self.key[i][rows], self.value[i][rows]
            bind(binding, A.PAST_KEY % i, k)
            bind(binding, A.PRESENT_KEY % i, k, output=True)
            bind(binding, A.PAST_VALUE % i, v)
            bind(binding, A.PRESENT_VALUE % i, v, output=True)
            bind(binding, A.PAST_CONV % i, self.conv[i][cur, rows])
            bind(binding, A.PRESENT_CONV % i, self.conv[i][nxt, rows], output=True)
            bind(binding, A.PAST_RECURRENT % i, self.recurrent[i][cur, rows])
            bind(binding, A.PRESENT_RECURRENT % i, self.recurrent[i][nxt, rows], output=True)

    def mask_for(self, start: int, stop: int, new_columns: int) -> np.ndarray:
        """A contiguous copy of rows [start, stop)'s mask widened by `new_columns` (to fill)."""
        return np.ascontiguousarray(self.mask[start:stop, : self.columns + new_columns])

    def commit(self, start: int, stop: int, new_mask: np.ndarray, live: int | None = None) -> None:
        """After a call: the new columns are in use and the other state buffer is current.

        Live rows outside [start, stop) did not run: their fixed state is carried over and their
        new columns stay masked (holes). Rows from `live` on are free, zero in both buffers
        (clear_row, reset), so they need no carrying.
        """
        n = new_mask.shape[1]
        cols = slice(self.columns, self.columns + n)
        self.mask[:, cols] = 0
        self.mask[start:stop, cols] = new_mask
        cur, nxt = self.phase, 1 - self.phase
        live = self.slots if live is None else max(live, stop)
        if start > 0 or stop < live:
            outside = np.r_[0:start, stop:live]
            for i in range(self.dims.num_layers):
                self.conv[i][nxt, outside] = self.conv[i][cur, outside]
                self.recurrent[i][nxt, outside] = self.recurrent[i][cur, outside]
        self.phase = nxt
        self.columns += n

    # ---- per-row operations -------------------------------------------------------------
    def clear_row(self, row: int) -> None:
        self.mask[row] = 0
        for i in range(self.dims.num_layers):
            self.conv[i][:, row] = 0
            self.recurrent[i][:, row] = 0

    def copy_row(self, src: int, dst: int) -> None:
        """dst becomes an exact copy of src (used columns and fixed state)."""
        if src == dst:
            return
        c, p = self.columns, self.phase
        for i in range(self.dims.num_layers):
            self.key[i][dst, :, :c] = self.key[i][src, :, :c]
            self.value[i][dst, :, :c] = self.value[i][src, :, :c]
            self.conv[i][p, dst] = self.conv[i][p, src]
            self.recurrent[i][p, dst] = self.recurrent[i][p, src]
        self.mask[dst, :c] = self.mask[src, :c]

    def snapshot(self, row: int) -> RowState:
        cols = np.flatnonzero(self.mask[row, : self.columns])
        p = self.phase
        return RowState(
            key=[k[row][:, cols].copy() for k in self.key],
            value=[v[row][:, cols].copy() for v in self.value],
            conv=[c[p, row].copy() for c in self.conv],
            recurrent=[r[p, row].copy() for r in self.recurrent],
            tokens=len(cols),
        )

    def snapshot_nbytes(self, tokens: int) -> int:
        """What snapshot() of a row of `tokens` tokens holds: to budget one before taking it."""
        kv = sum(b.shape[1] * b.shape[3] * b.itemsize for b in self.key + self.value)
        fixed = sum(b[0, 0].nbytes for b in self.conv + self.recurrent)
        return tokens * kv + fixed

    def restore(self, state: RowState, row: int) -> None:
        """Put a snapshot into `row`, right-aligned to the batch's current columns."""
        n = state.tokens
        if n > self.columns:  # the other rows get masked holes in the new columns
            if n > self.max_capacity:
                raise ContextFullError(f"context full: {n} positions needed, the artifact supports {self.max_capacity}")
            if n > self.capacity:  # only the width matters here: no defragment (it could shrink columns)
                self._grow(max(n, 2 * self.capacity))
            self.mask[:, self.columns : n] = 0
            self.columns = n
        start = self.columns - n
        p = self.phase
        self.mask[row, : self.columns] = 0
        self.mask[row, start : self.columns] = 1
        for i in range(self.dims.num_layers):
            self.key[i][row, :, start : self.columns] = state.key[i]
            self.value[i][row, :, start : self.columns] = state.value[i]
            self.conv[i][p, row] = state.conv[i]
            self.recurrent[i][p, row] = state.recurrent[i]

    def defragment(self) -> None:
        """Right-align every row's real tokens and drop columns no row uses.

        Safe for RoPE: keys carry their token positions, not their columns.
        """
        counts = self.mask[:, : self.columns].sum(axis=1)
        width = int(counts.max()) if self.slots else 0
        if width == self.columns:
            return
        for row in range(self.slots):
            cols = np.flatnonzero(self.mask[row, : self.columns])
            n = len(cols)
            dst = slice(width - n, width)
            for group in (self.key, self.value):
                for buf in group:
                    buf[row][:, dst] = buf[row][:, cols]
            self.mask[row, :width] = 0
            self.mask[row, dst] = 1
        self.mask[:, width:] = 0
        self.columns = width

    def reset(self) -> None:
        self.columns = 0
        self.mask[:] = 0
        for i in range(self.dims.num_layers):
            self.conv[i][:] = 0
            self.recurrent[i][:] = 0
