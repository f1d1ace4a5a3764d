"""A fuzz of the checkpoint files the exporter reads: the safetensors header, the bytes of a
shard and the shard index. Every damaged checkpoint is one CheckpointError line, or it reads.

(config.json has its own fuzz beside the config reader's tests.)
"""

from __future__ import annotations

import json
import random
import shutil
import struct

import pytest

pytest.importorskip("torch")

from fuzz_util import mutated  # noqa: E402

from zaya_edge.errors import ZayaEdgeError  # noqa: E402
from zaya_edge.export.checkpoint import check_tensors, open_checkpoint  # noqa: E402

SHARD = "model.safetensors"


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _read_everything(folder) -> None:
    ckpt = open_checkpoint(folder)
    check_tensors(ckpt)
    for name in sorted(ckpt.names()):
        ckpt.read(name)


def _outcome(folder, tally) -> None:
    try:
        _read_everything(folder)
        tally["ok"] += 1
    except ZayaEdgeError as exc:
        assert "\n" not in str(exc), str(exc)
        tally["refused"] += 1


def test_random_safetensors_headers_and_bytes(ckpt_copy):
    path = ckpt_copy / SHARD
    original = path.read_bytes()
    header, data = _split(original)
    rng = random.Random(0)
    tally = {"ok": 0, "refused": 0}
    for trial in range(160):
        if trial < 100:
            raw = _join(mutated(header, rng), data)
        elif trial < 130:  # random bytes where the header length or header stands
            cut = rng.randrange(1, 64)
            raw = rng.randbytes(cut) + original[cut:]
        else:  # a truncated or random file
            raw = original[: rng.randrange(0, len(original))] if trial % 2 else rng.randbytes(rng.randrange(0, 512))
        path.write_bytes(raw)
        _outcome(ckpt_copy, tally)
    assert tally["refused"] >= 100


def test_random_shard_indexes(ckpt_copy):
    """The single file as a one-shard index; the index JSON mutated at random."""
    header, _ = _split((ckpt_copy / SHARD).read_bytes())
    shutil.move(ckpt_copy / SHARD, ckpt_copy / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {name: "model-00001-of-00001.safetensors"
                                            for name in header if name != "__metadata__"}}
    path = ckpt_copy / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    _read_everything(ckpt_copy)  # the intact index reads
    rng = random.Random(1)
    tally = {"ok": 0, "refused": 0}
    for trial in range(120):
        path.write_text(json.dumps(mutated(index, rng)) if trial < 100 else rng.randbytes(64).hex()[: trial])
        _outcome(ckpt_copy, tally)
    assert tally["refused"] >= 60
