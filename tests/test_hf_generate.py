"""zaya_edge.hf on a random tiny model (conftest's tiny_artifact): generate()'s hooks, the cache
object transformers drives, and what is refused with one clear message.

Random weights give flat distributions, so beams and processors take different paths than on
the trained reasoner; transformers' own model is the reference for each.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer  # noqa: E402

from zaya_edge import graph_io as G  # noqa: E402
from zaya_edge.errors import ContextFullError, RequestError  # noqa: E402
from zaya_edge.hf import ZayaORTForCausalLM, ZayaStateCache  # noqa: E402
from zaya_edge.hf.model import CACHE_KEY  # noqa: E402

PROMPTS = [[2, 9, 40, 41, 77, 12, 5], [2, 300, 17]]


@pytest.fixture(scope="module")
def pair(tiny_artifact):
    """(transformers' model, ours) over the same weights."""
    ref, folder = tiny_artifact
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ref, ZayaORTForCausalLM.from_pretrained(folder, threads=1)
    torch.set_num_threads(threads)


def _batch():
    width = max(map(len, PROMPTS))
    ids = torch.zeros((len(PROMPTS), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(PROMPTS):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _both(pair, **kw):
    ref, ours = pair
    with torch.no_grad():
        return ours.generate(**_batch(), **kw), ref.generate(**_batch(), **kw)


class BanToken(LogitsProcessor):
    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores):
        scores[:, self.token] = -float("inf")
        return scores


class StopOnToken(StoppingCriteria):
    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] == self.token


class Collect(BaseStreamer):
    def __init__(self):
        self.chunks = []

    def put(self, value):
        self.chunks.append(value.tolist())

    def end(self):
        self.chunks.append("end")


def test_beam_search_and_beam_sampling_equal_transformers(pair):
    ours, theirs = _both(pair, max_new_tokens=12, num_beams=4, num_return_sequences=3, do_sample=False, length_penalty=0.7)
    assert torch.equal(ours, theirs)
    torch.manual_seed(5)
    a = pair[1].generate(**_batch(), max_new_tokens=12, num_beams=3, do_sample=True)
    torch.manual_seed(5)
    with torch.no_grad():
        assert torch.equal(a, pair[0].generate(**_batch(), max_new_tokens=12, num_beams=3, do_sample=True))


def test_logits_processors_and_stopping_criteria_act_as_on_transformers(pair):
    greedy, _ = _both(pair, max_new_tokens=10, do_sample=False)
    first = int(greedy[0, -10])
    ours, theirs = _both(pair, max_new_tokens=10, do_sample=False, repetition_penalty=1.3,
                         logits_processor=LogitsProcessorList([BanToken(first)]))
    assert torch.equal(ours, theirs) and first not in ours[:, -10:].tolist()[0]
    stop = int(greedy[1, -7])  # row 1 stops after 4 new tokens (padded after), row 0 runs on
    ours, theirs = _both(pair, max_new_tokens=10, do_sample=False,
                         stopping_criteria=StoppingCriteriaList([StopOnToken(stop)]))
    assert torch.equal(ours, theirs) and torch.equal(ours[0], greedy[0])
    assert ours[1, -7] == stop and (ours[1, -6:] == pair[1].generation_config.pad_token_id).all()


def test_streamer_receives_every_token(pair):
    streamer = Collect()
    one = {"input_ids": torch.tensor([PROMPTS[0]])}
    out = pair[1].generate(**one, max_new_tokens=6, do_sample=False, streamer=streamer)
    assert streamer.chunks[0] == [PROMPTS[0]] and streamer.chunks[-1] == "end"
    assert [c[0] for c in streamer.chunks[1:-1]] == out[0, len(PROMPTS[0]):].tolist()


def test_the_call_continues_on_its_cache_as_transformers_does(pair):
    ref, ours = pair
    ids, mask = _batch()["input_ids"], _batch()["attention_mask"]
    first = ours(input_ids=ids[:, :-2], attention_mask=mask[:, :-2])
    cache = first[CACHE_KEY]  # made by the call, as transformers' models make theirs
    assert isinstance(cache, ZayaStateCache) and cache.get_seq_length() == ids.shape[1] - 2
    ours(input_ids=ids[:, -2:-1], attention_mask=mask[:, :-1], cache=cache)
    last = ours(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=cache).logits[:, -1]  # either name
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert torch.allclose(last, want, atol=1e-4)
    assert cache.batch_size == 2 and cache.get_seq_length() == ids.shape[1]


def test_the_cache_reorders_every_kind_of_state(pair):
    cache = pair[1].new_cache()
    pair[1](**_batch(), cache=cache)
    before = {k: v.copy() for k, v in cache.states.items()}
    assert {n for n in before} == {G.PAST_NAMES[k] % i for i in range(4) for k in G.STATE_KINDS}
    cache.reorder_cache(torch.tensor([1, 1, 0]))
    assert all(np.array_equal(cache.states[k], v[[1, 1, 0]]) for k, v in before.items())
    cache.batch_select_indices(torch.tensor([2]))
    assert all(np.array_equal(cache.states[k], v[[0]]) for k, v in before.items())
    cache.batch_repeat_interleave(2)
    assert cache.batch_size == 2 and all(np.array_equal(cache.states[k], v[[0, 0]]) for k, v in before.items())
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.batch_size == -1


def test_refusals_are_one_line(pair, tiny_artifact):
    ref, ours = pair
    with pytest.raises(ValueError, match="stateful"):
        ours.generate(**_batch(), max_new_tokens=4, prompt_lookup_num_tokens=2)
    with pytest.raises(RequestError, match="cannot be cropped"):
        ours.new_cache().crop(1)
    with pytest.raises(RequestError, match="output_hidden_states is not supported"):
        ours(**_batch(), output_hidden_states=True)
    with pytest.raises(RequestError, match="must be a ZayaStateCache"):
        ours(**_batch(), cache=DynamicCache(config=ref.config))
    with pytest.raises(RequestError, match="input_ids must be"):
        ours(input_ids=torch.tensor([1, 2]))
    with pytest.raises(RequestError, match="attention_mask must be"):
        ours(input_ids=_batch()["input_ids"], attention_mask=torch.ones((2, 3), dtype=torch.long))
    with pytest.raises(RequestError, match="outside the vocabulary"):
        ours(input_ids=torch.tensor([[ref.config.vocab_size]]))
    with pytest.raises(ContextFullError, match="context full"):
        ours(input_ids=torch.ones((1, ours.artifact.context_length + 1), dtype=torch.long))
    with pytest.raises(RequestError, match="already the saved model"):
        ours.save_pretrained(tiny_artifact[1])
