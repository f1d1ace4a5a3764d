"""fp32 exports against transformers' ZayaForCausalLM, max |logit diff| <= 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ort_decoder import OrtDecoder  # noqa: E402

from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import tiny_model  # noqa: E402

TOL = 1e-4


def _export(model, tmp_path_factory, name, **kw):
    out = tmp_path_factory.mktemp("art") / name
    export_model(model, out, progress=False, **{"precision": "fp32", **kw})
    return OrtDecoder(out)


def _hf_logits(model, ids, mask=None):
    with torch.no_grad():
        return model(torch.as_tensor(ids), attention_mask=None if mask is None else torch.as_tensor(mask)).logits.numpy()


class SkipCounter:
    """Counts tokens routed to the skip class in every layer of an HF model."""

    def __init__(self, model):
        self.count = 0
        self.routed = 0
        for layer in model.model.layers:
            layer.mlp.gate.register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        probs = out[1]  # the chosen class's probability, masked to 0 for skipped tokens
        self.count += int((probs == 0).sum())
        self.routed += probs.numel()


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def all_logits(model, tmp_path_factory):
    return _export(model, tmp_path_factory, "all", all_logits=True)


@pytest.fixture(scope="module")
def last_logits(model, tmp_path_factory):
    return _export(model, tmp_path_factory, "last")


def _ids(rng, vocab, *shape):
    return rng.integers(4, vocab, size=shape, dtype=np.int64)


def test_prefill_17_tokens_all_positions(model, all_logits):
    rng = np.random.default_rng(0)
    ids = _ids(rng, model.config.vocab_size, 2, 17)
    logits, _ = all_logits.step(ids, np.ones_like(ids), all_logits.zero_state(2))
    ref = _hf_logits(model, ids)
    assert logits.shape == ref.shape == (2, 17, model.config.vocab_size)
    assert np.abs(logits - ref).max() <= TOL


def test_prefill_last_position_only(model, last_logits):
    rng = np.random.default_rng(1)
    ids = _ids(rng, model.config.vocab_size, 1, 17)
    logits, _ = last_logits.step(ids, np.ones_like(ids), last_logits.zero_state(1))
    ref = _hf_logits(model, ids)[:, -1:]
    assert logits.shape == (1, 1, model.config.vocab_size)
    assert np.abs(logits - ref).max() <= TOL


def test_prefill_then_32_decode_steps(model, last_logits):
    rng = np.random.default_rng(2)
    ids = _ids(rng, model.config.vocab_size, 2, 17 + 32)
    ref = _hf_logits(model, ids)
    logits, state = last_logits.step(ids[:, :17], np.ones((2, 17)), last_logits.zero_state(2))
    diffs = [np.abs(logits[:, 0] - ref[:, 16]).max()]
    for t in range(17, 17 + 32):
        logits, state = last_logits.step(ids[:, t : t + 1], np.ones((2, t + 1)), state)
        diffs.append(np.abs(logits[:, 0] - ref[:, t]).max())
    assert max(diffs) <= TOL, diffs


def test_chunked_prefill(model, all_logits):
    rng = np.random.default_rng(3)
    ids = _ids(rng, model.config.vocab_size, 1, 13)
    ref = _hf_logits(model, ids)
    state, start = all_logits.zero_state(1), 0
    for size in (5, 1, 3, 4):
        logits, state = all_logits.step(ids[:, start : start + size], np.ones((1, start + size)), state)
        assert np.abs(logits - ref[:, start : start + size]).max() <= TOL
        start += size


def test_left_padded_batch_then_decode(model, all_logits):
    rng = np.random.default_rng(4)
    lengths = (9, 4, 14)
    width = max(lengths)
    ids = np.zeros((3, width), np.int64)
    mask = np.zeros((3, width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = _ids(rng, model.config.vocab_size, n)
        mask[row, width - n :] = 1
    logits, state = all_logits.step(ids, mask, all_logits.zero_state(3))
    ref = _hf_logits(model, ids, mask)
    for row, n in enumerate(lengths):  # padded positions are don't-care, real ones must match
        assert np.abs(logits[row, width - n :] - ref[row, width - n :]).max() <= TOL
        alone = _hf_logits(model, ids[row : row + 1, width - n :])
        assert np.abs(logits[row, width - n :] - alone[0]).max() <= TOL
    # continue all three rows with 6 decode steps against HF's own padded decoding
    full_ids, full_mask = ids, mask
    for _ in range(6):
        nxt = _ids(rng, model.config.vocab_size, 3, 1)
        full_ids = np.concatenate([full_ids, nxt], 1)
        full_mask = np.concatenate([full_mask, np.ones((3, 1), np.int64)], 1)
        logits, state = all_logits.step(nxt, full_mask, state)
        ref = _hf_logits(model, full_ids, full_mask)[:, -1]
        assert np.abs(logits[:, 0] - ref).max() <= TOL


def test_sliding_window_layer(tmp_path_factory):
    model = tiny_model(seed=2, layer_types=["hybrid", "hybrid_sliding", "hybrid", "hybrid_sliding"], sliding_window=4)
    dec = _export(model, tmp_path_factory, "sliding", all_logits=True)
    rng = np.random.default_rng(5)
    ids = _ids(rng, model.config.vocab_size, 2, 10 + 12)
    ref = _hf_logits(model, ids)
    logits, state = dec.step(ids[:, :10], np.ones((2, 10)), dec.zero_state(2))
    assert np.abs(logits - ref[:, :10]).max() <= TOL  # prompt longer than the window
    for t in range(10, 22):
        logits, state = dec.step(ids[:, t : t + 1], np.ones((2, t + 1)), state)
        assert np.abs(logits[:, 0] - ref[:, t]).max() <= TOL
    # left padding with a sliding layer
    mask = np.ones((2, 10), np.int64)
    mask[1, :3] = 0
    logits, _ = dec.step(ids[:, :10], mask, dec.zero_state(2))
    ref = _hf_logits(model, ids[:, :10], mask)
    assert np.abs(logits[0] - ref[0]).max() <= TOL
    assert np.abs(logits[1, 3:] - ref[1, 3:]).max() <= TOL


def test_skip_expert_taken(tmp_path_factory):
    # a skip bias that wins often: every layer must route some tokens to "skip"
    model = tiny_model(seed=3)
    for layer in model.model.layers:
        layer.mlp.gate.balancing_biases[-1] = -0.85
    counter = SkipCounter(model)
    dec = _export(model, tmp_path_factory, "skip", all_logits=True)
    rng = np.random.default_rng(6)
    ids = _ids(rng, model.config.vocab_size, 2, 24)
    ref = _hf_logits(model, ids)
    assert 0 < counter.count < counter.routed, (counter.count, counter.routed)
    logits, _ = dec.step(ids, np.ones_like(ids), dec.zero_state(2))
    assert np.abs(logits - ref).max() <= TOL
