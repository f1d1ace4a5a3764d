"""Sampling filters and the streaming decoder, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from zaya_edge.runtime import sampling
from zaya_edge.runtime.tokenizer import StreamDecoder, Tokenizer
from zaya_edge.runtime.types import SamplingParams


def test_top_k_keeps_k_best():
    logits = np.array([1.0, 5.0, 3.0, 4.0, 2.0])
    out = sampling.top_k_filter(logits, 2)
    assert set(np.flatnonzero(np.isfinite(out))) == {1, 3}


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    out = sampling.top_p_filter(probs, 0.8)
    assert np.count_nonzero(out) == 2 and out.sum() == pytest.approx(1.0)
    assert np.count_nonzero(sampling.top_p_filter(probs, 0.81)) == 3


def test_min_p_drops_unlikely_tokens():
    probs = np.array([0.6, 0.3, 0.07, 0.03])
    out = sampling.min_p_filter(probs, 0.1)  # threshold 0.06
    assert np.flatnonzero(out).tolist() == [0, 1, 2]


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
    from zaya_edge.export.tiny_tokenizer import save_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(folder)
    return Tokenizer(folder)


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
