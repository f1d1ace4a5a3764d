"""zaya_edge.hf: the artifact behind transformers' generate() and pipeline, on the tiny reasoner.

Greedy must equal the runtime (`zaya-edge run`'s Engine at temperature 0) and transformers'
own model; beams and seeded sampling must equal transformers'; left padding, chunked prefill,
logits processors, stopping criteria and streamers must behave as with any transformers model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from zaya_edge import custom_ops  # noqa: E402
from zaya_edge.app import tiny_arith as T  # noqa: E402
from zaya_edge.hf import ZayaORTForCausalLM, load_tokenizer  # noqa: E402
from zaya_edge.runtime.rsa import extract_boxed  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parent.parent / "examples" / "tiny-reasoner" / "checkpoint"
PROBLEMS = [p.text for p in T.held_out_set(40)[-3:]]
NATIVE = custom_ops.find_library() is not None


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """With another process on a core, spinning OpenMP threads made generate ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from zaya_edge.export import export_model

    return export_model(CHECKPOINT, tmp_path_factory.mktemp("hf") / "fp32", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def model(artifact):
    return ZayaORTForCausalLM.from_pretrained(artifact, threads=1)


@pytest.fixture(scope="module")
def tok(artifact):
    return load_tokenizer(artifact)


@pytest.fixture(scope="module")
def ref():
    from transformers import ZayaForCausalLM

    return ZayaForCausalLM.from_pretrained(CHECKPOINT, dtype=torch.float32).eval()


def _chat(tok, question: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)


def _inputs(tok, questions, **kw):
    return tok([_chat(tok, q) for q in questions], return_tensors="pt", padding=True, add_special_tokens=False, **kw)


def test_greedy_equals_the_runtime_and_transformers(artifact, model, tok, ref):
    from zaya_edge.runtime import Engine, Request, SamplingParams

    engine = Engine.load(artifact, threads=1)
    params = SamplingParams(temperature=0, max_new_tokens=T.BUDGET)
    for question in PROBLEMS:
        prompt = engine.codec.chat_prompt(question)
        assert _inputs(tok, [question])["input_ids"][0].tolist() == prompt  # one tokenizer, one template
        ids = torch.tensor([prompt])
        ours = model.generate(ids, max_new_tokens=T.BUDGET, do_sample=False)[0, len(prompt):].tolist()
        with torch.no_grad():
            theirs = ref.generate(ids, max_new_tokens=T.BUDGET, do_sample=False)[0, len(prompt):].tolist()
        runtime = engine.generate_batch([Request(tuple(prompt), params)])[0]
        assert ours == runtime.tokens == theirs, question
        assert ours[-1] in engine.eos_token_ids and T.is_correct(extract_boxed(tok.decode(ours)), T.parse_problem(question))


def test_sampling_with_a_seed_is_reproducible_and_matches_transformers(model, tok, ref):
    batch = _inputs(tok, PROBLEMS[:1])
    runs = []
    for generator in (model, model, ref):
        torch.manual_seed(1234)
        with torch.no_grad():
            runs.append(generator.generate(**batch, max_new_tokens=40, do_sample=True, temperature=3.0, top_k=50))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    torch.manual_seed(99)
    assert not torch.equal(runs[0], model.generate(**batch, max_new_tokens=40, do_sample=True, temperature=3.0, top_k=50))


def test_beam_search_equals_transformers(model, tok, ref):
    batch = _inputs(tok, PROBLEMS[:2])  # two prompts of different lengths: left-padded beams
    kw = dict(max_new_tokens=30, num_beams=3, num_return_sequences=2, do_sample=False,
              return_dict_in_generate=True, output_scores=True)
    ours = model.generate(**batch, **kw)
    with torch.no_grad():
        theirs = ref.generate(**batch, **kw)
    assert torch.equal(ours.sequences, theirs.sequences)
    assert torch.allclose(ours.sequences_scores, theirs.sequences_scores, atol=1e-4)


def test_left_padded_batch_equals_each_prompt_alone(model, tok, ref):
    batch = _inputs(tok, PROBLEMS)
    assert batch["attention_mask"].min() == 0  # the prompts differ in length: padded on the left
    together = model.generate(**batch, max_new_tokens=50, do_sample=False)
    width = batch["input_ids"].shape[1]
    for row, question in enumerate(PROBLEMS):
        one = _inputs(tok, [question])
        alone = model.generate(**one, max_new_tokens=50, do_sample=False)[0, one["input_ids"].shape[1]:]
        assert together[row, width : width + len(alone)].tolist() == alone.tolist(), question
    with torch.no_grad():
        assert torch.equal(together, ref.generate(**batch, max_new_tokens=50, do_sample=False))
    # several tokens over a past with batch > 1 (chunked prefill) runs row by row in the session
    assert torch.equal(together, model.generate(**batch, max_new_tokens=50, do_sample=False, prefill_chunk_size=7))
    # without a cache every step re-reads the whole sequence: the same tokens, slower
    assert torch.equal(together[:, : width + 8], model.generate(**batch, max_new_tokens=8, do_sample=False, use_cache=False))


def test_pipeline_with_the_artifacts_tokenizer(model, tok, capfd):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    assert "not supported" not in capfd.readouterr().err
    question = PROBLEMS[0]
    [out] = pipe([{"role": "user", "content": question}], max_new_tokens=T.BUDGET, do_sample=False)
    answer = out["generated_text"][-1]["content"]
    assert T.is_correct(extract_boxed(answer), T.parse_problem(question)), answer
    texts = [_chat(tok, q) for q in PROBLEMS]
    outs = pipe(texts, max_new_tokens=T.BUDGET, do_sample=False, batch_size=3, return_full_text=False)
    for question, [o] in zip(PROBLEMS, outs):
        assert T.is_correct(extract_boxed(o["generated_text"]), T.parse_problem(question)), o


@pytest.mark.skipif(not NATIVE, reason="custom-op library not built (make custom-ops)")
def test_with_and_without_the_custom_op_library(artifact, model, tok):
    fallback = ZayaORTForCausalLM.from_pretrained(artifact, threads=1, custom_ops=False)
    assert model.uses_native_kernels and not fallback.uses_native_kernels
    batch = _inputs(tok, PROBLEMS)
    kw = dict(max_new_tokens=T.BUDGET, do_sample=False)
    assert torch.equal(model.generate(**batch, **kw), fallback.generate(**batch, **kw))


def test_fallback_without_the_library(artifact, tok):
    fallback = ZayaORTForCausalLM.from_pretrained(artifact, threads=1, custom_ops=False)
    assert not fallback.uses_native_kernels
    out = fallback.generate(**_inputs(tok, PROBLEMS[:1]), max_new_tokens=T.BUDGET, do_sample=False)
    assert T.is_correct(extract_boxed(tok.decode(out[0])), T.parse_problem(PROBLEMS[0]))
