"""Sampling filters and the streaming decoder, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from zaya_edge.runtime import sampling
from zaya_edge.runtime.tokenizer import StreamDecoder, Tokenizer
from zaya_edge.runtime.types import SamplingParams


def test_top_k_keeps_k_best():
    weights = np.array([1.0, 5.0, 3.0, 4.0, 2.0])
    assert set(sampling.top_k(weights, np.arange(5), 2)) == {1, 3}


def test_top_p_keeps_smallest_set_reaching_p():
    w = np.array([0.5, 0.3, 0.15, 0.05])
    assert set(sampling.top_p(w, np.arange(4), 0.8, 1.0)) == {0, 1}
    assert set(sampling.top_p(w, np.arange(4), 0.81, 1.0)) == {0, 1, 2}


def test_min_p_drops_unlikely_tokens():
    w = np.array([0.6, 0.3, 0.07, 0.03])
    assert sampling.min_p(w, np.arange(4), 0.1).tolist() == [0, 1, 2]  # threshold 0.06


def test_repetition_penalty_direction():
    logits = np.array([2.0, -2.0, 1.0])
    out = sampling.apply_repetition_penalty(logits, np.array([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_greedy_and_seeded_sampling():
    logits = np.random.default_rng(0).normal(size=50)
    assert sampling.sample(logits, SamplingParams(temperature=0), sampling.make_rng(0), np.empty(0, np.int64)) == int(logits.argmax())
    draw = lambda seed: [sampling.sample(logits, SamplingParams(temperature=1.0), r, np.empty(0, np.int64)) for r in [sampling.make_rng(seed)] for _ in range(20)]
    assert draw(5) == draw(5) and draw(5) != draw(6)


def test_top_k_one_is_greedy_at_any_temperature():
    logits = np.random.default_rng(1).normal(size=30)
    rng = sampling.make_rng(0)
    picks = {sampling.sample(logits, SamplingParams(temperature=2.0, top_k=1), rng, np.empty(0, np.int64)) for _ in range(20)}
    assert picks == {int(logits.argmax())}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from zaya_edge.export.fixtures.tiny_tokenizer import save_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(folder)
    return Tokenizer.from_folder(folder)


def test_stream_decoder_never_splits_multibyte_characters(tokenizer):
    text = "Über café 你好世界 🙂🙂 naïve ÆØÅ"
    ids = tokenizer.encode(text)
    # the byte-level tokenizer splits these characters across tokens: prove it does
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)
    dec = StreamDecoder(tokenizer)
    deltas = [dec.push(t) for t in ids]
    deltas.append(dec.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert "" in deltas[:-1]  # some token's bytes were held back until the character completed


def test_chat_template_renders_chatml(tokenizer):
    ids = tokenizer.chat_prompt("hi")
    text = tokenizer.decode(ids)
    assert text == "<bos><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_top_p_widening_equals_a_full_sort():
    """The candidate-partition shortcut keeps exactly the set a full sort would keep."""
    rng = np.random.default_rng(3)
    for temperature in (0.3, 1.0, 3.0):
        z = rng.normal(size=5000) / temperature
        w = np.exp(z - z.max())
        for p in (0.5, 0.9, 0.999):
            order = np.argsort(-w, kind="stable")
            keep = order[(np.cumsum(w[order]) - w[order]) / w.sum() < p]
            assert set(sampling.top_p(w, np.arange(w.size), p, w.sum())) == set(keep)


def test_draw_follows_the_distribution():
    probs = np.array([0.1, 0.0, 0.6, 0.3])
    rng = sampling.make_rng(0)
    counts = np.bincount([sampling.draw(probs, rng) for _ in range(4000)], minlength=4)
    assert counts[1] == 0
    assert np.allclose(counts / 4000, probs, atol=0.03)


def test_restore_a_snapshot_wider_than_a_cache_with_holes(tiny_artifact):
    """A prefilled sequence longer than the batch's cache moves in whole (it once failed to broadcast)."""
    from zaya_edge import artifact as A
    from zaya_edge.runtime.cache import StateCache

    dims = A.Artifact.open(tiny_artifact[1]).dims
    rng = np.random.default_rng(0)
    big = StateCache(dims, 1, 32, 64)
    big.mask[0, :20], big.columns = 1, 20
    for buf in big.key + big.value:
        buf[0, :, :20] = rng.standard_normal(buf[0, :, :20].shape)
    snap = big.snapshot(0)
    small = StateCache(dims, 2, 8, 64)
    small.mask[0, :3], small.columns = 1, 8  # row 0 holds 3 tokens among holes
    small.restore(snap, 1)
    assert small.columns == 20 and small.mask[1, :20].sum() == 20 and small.mask[0, :3].sum() == 3
    np.testing.assert_array_equal(small.key[0][1][:, :20], snap.key[0])
    np.testing.assert_array_equal(small.value[-1][1][:, :20], snap.value[-1])


def test_the_penalty_follows_every_generated_token():
    """Greedy with a strong repetition penalty: each pick is penalised from the next step on."""
    from zaya_edge.runtime.sequence import SequenceState
    from zaya_edge.runtime.types import Request

    params = SamplingParams(temperature=0.0, repetition_penalty=100.0, max_new_tokens=8, ignore_eos=True)
    seq = SequenceState(0, Request((1,), params), [], None)
    logits = np.array([0.0, 9.0, 5.0, 4.0, 3.0], np.float32)  # token 1 is in the prompt
    picks = []
    for _ in range(3):
        seq.logits = logits.copy()
        picks.append(seq.step().token)
    assert picks == [2, 3, 4]
