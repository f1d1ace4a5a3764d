"""Markovian RSA's rounds against the scripted fake engine: batches, budgets, exact prompts, tails,
and the special cases (T = 0, C = 1, τ = β, aggregate selection)."""

from __future__ import annotations

import json

from rsa_fakes import EOS, PROBLEM, CharCodec, FakeEngine, chat_text, default_script, prompt_text, rsa, shown_tails

from zaya_edge.runtime.rsa import default_template, extract_boxed, majority_vote, render_prompt

# ---------------------------------------------------------------- round structure and prompts


def test_rounds_are_one_batch_each_with_the_right_budgets():
    engine = FakeEngine()
    result = rsa().solve(engine, PROBLEM)
    assert [len(batch) for batch in engine.calls] == [4, 4, 4]
    assert [r.kind for r in result.rounds] == ["rollout", "aggregate", "aggregate"]
    assert [{r.params.max_new_tokens for r in batch} for batch in engine.calls] == [{200}, {200}, {300}]
    assert {r.prompt_ids for r in engine.calls[0]} == {tuple(CharCodec().chat_prompt(PROBLEM))}
    seeds = [r.params.seed for batch in engine.calls for r in batch]
    assert len(set(seeds)) == len(seeds)
    assert {(r.params.temperature, r.params.top_p) for b in engine.calls for r in b} == {(1.0, 1.0)}
    assert [r.generated_tokens for r in result.rounds] == [sum(len(c.tokens) for c in out) for out in engine.outputs]
    report = json.loads(json.dumps(result.report()))
    assert [len(r["candidates"]) for r in report["rounds"]] == [4, 4, 4]
    assert report["generated_tokens"] == sum(r["generated_tokens"] for r in report["rounds"])
    assert {"tail", "generated_tokens", "finish_reason", "answer"} <= set(report["rounds"][1]["candidates"][0])
    assert report["trace"] == result.trace and report["answer"] == result.answer


def test_aggregation_prompts_are_exact_and_draw_distinct_tails_from_the_previous_round_only():
    engine = FakeEngine()
    result = rsa(population=6, subset=3, rounds=3).solve(engine, PROBLEM)
    tails = [[c.tail for c in r.candidates] for r in result.rounds]
    assert len({t for ts in tails for t in ts}) == sum(map(len, tails))  # all distinct, so blocks are traceable
    for t in range(1, 4):
        for j, req in enumerate(engine.calls[t]):
            subset = result.rounds[t].candidates[j].subset
            assert len(subset) == len(set(subset)) == 3 and set(subset) <= set(range(6))
            shown = [tails[t - 1][i] for i in subset]
            assert prompt_text(req) == chat_text(render_prompt(default_template(3), PROBLEM, shown))
            assert shown_tails(prompt_text(req)) == shown
    draws = [tuple(c.subset) for r in result.rounds[1:] for c in r.candidates]
    assert len(set(draws)) > 1  # a fresh draw per prompt


def test_template_file_structure_is_filled_in_once():
    text = render_prompt(default_template(2), "solve {candidates}", ["tail {problem} a", "b"])
    assert "[[ Problem ]]:\nsolve {candidates}\n" in text
    assert "---- Solution 1 ----\ntail {problem} a\n\n---- Solution 2 ----\nb" in text
    assert text.rstrip().endswith("\\boxed{}.")
    assert "refine" in default_template(1).lower() and "{candidates}" in default_template(1)


def test_every_prompt_is_bounded_by_problem_plus_c_tails_plus_template():
    engine = FakeEngine()
    rsa(population=5, subset=3, tail=40).solve(engine, PROBLEM)
    overhead = len(CharCodec().chat_prompt(render_prompt(default_template(3), "", [""] * 3)))
    bound = len(PROBLEM) + 3 * 40 + overhead
    lengths = [len(r.prompt_ids) for batch in engine.calls[1:] for r in batch]
    assert max(lengths) <= bound
    assert bound in lengths  # tight when every shown tail is a full τ


def test_tail_is_the_last_tau_generated_tokens():
    engine = FakeEngine()
    result = rsa(tail=50).solve(engine, PROBLEM)
    reasons = {c.finish_reason for r in result.rounds for c in r.candidates}
    assert reasons == {"eos", "length"}  # both a finished and a budget-cut candidate pass a tail
    for r in result.rounds:
        for c in r.candidates:
            assert c.tail == c.text[-50:] and c.tail_length == 50 and c.carried == "tail"
            assert "<a>" not in c.tail and "</u>" not in c.tail  # never the prompt's template tokens


class ByteCodec(CharCodec):
    """Byte-level tokens (id = byte + 1), so a tail can start inside a multi-byte character."""

    def encode(self, text):
        return [b + 1 for b in text.encode("utf-8")]

    def decode(self, ids):
        return bytes(i - 1 for i in ids if i != EOS).decode("utf-8", errors="replace")


def test_tail_cut_inside_a_character_drops_the_broken_bytes():
    engine = FakeEngine(script=lambda prompt, seed: "é" * 30 + " \\boxed{7}")
    engine.codec = ByteCodec()
    result = rsa(tail=11, rounds=0).solve(engine, PROBLEM)
    assert {(c.tail, c.tail_length) for c in result.rounds[0].candidates} == {(" \\boxed{7}", 11)}


def test_word_tail_keeps_the_last_tau_words_with_their_spacing():
    result = rsa(tail_unit="words", tail=7).solve(FakeEngine(), PROBLEM)
    for c in (c for r in result.rounds for c in r.candidates):
        assert c.tail.split() == c.text.split()[-7:] and c.text.endswith(c.tail) and c.tail_length == 7
        if c.finish_reason == "eos":
            assert "\n</think>\nSo the answer is" in c.tail


def test_carry_answer_when_finished_carries_the_answer_section():
    result = rsa(carry_answer_when_finished=True).solve(FakeEngine(), PROBLEM)
    kinds = set()
    for c in (c for r in result.rounds for c in r.candidates):
        if "</think>" in c.text:
            assert c.carried == "answer" and c.tail == c.text.rsplit("</think>", 1)[1].strip()
        else:
            assert c.carried == "tail" and c.tail == c.text[-50:]
        kinds.add(c.carried)
    assert kinds == {"answer", "tail"}


# ---------------------------------------------------------------- special cases


def test_rounds_zero_is_plain_parallel_sampling():
    engine = FakeEngine()
    result = rsa(rounds=0, population=5).solve(engine, PROBLEM)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 5
    assert {r.params.max_new_tokens for r in engine.calls[0]} == {300}  # round 0 is the final round
    assert result.answer == majority_vote(result.rounds[0].candidates)[0] and result.winner[0] == 0


def test_subset_one_is_bounded_self_continuation():
    engine = FakeEngine()
    result = rsa(subset=1).solve(engine, PROBLEM)
    for t in (1, 2):
        for j, req in enumerate(engine.calls[t]):
            prev = result.rounds[t - 1].candidates[j]
            assert result.rounds[t].candidates[j].subset == [j]
            assert prompt_text(req) == chat_text(render_prompt(default_template(1), PROBLEM, [prev.tail]))
            assert prompt_text(req).startswith("<u>You are given a problem and one candidate solution trajectory")


def test_tail_equal_to_budget_carries_whole_chains():
    engine = FakeEngine()
    result = rsa(tail=200).solve(engine, PROBLEM)
    for r in result.rounds[:-1]:
        for c in r.candidates:
            assert c.tail == c.text
    shown = shown_tails(prompt_text(engine.calls[1][0]))
    assert all(s in [c.text for c in result.rounds[0].candidates] for s in shown)


def test_aggregate_selection_is_one_final_sample_at_the_reference_sampling():
    engine = FakeEngine()
    result = rsa(select="aggregate").solve(engine, PROBLEM)
    assert len(engine.calls) == 4 and len(engine.calls[3]) == 1
    p = engine.calls[3][0].params
    assert (p.temperature, p.top_p, p.top_k, p.max_new_tokens) == (0.6, 0.95, 40, 300)
    shown = shown_tails(prompt_text(engine.calls[3][0]))
    assert len(shown) == 2 and set(shown) <= {c.tail for c in result.rounds[2].candidates}
    assert result.selected_by == "aggregate" and result.winner == (3, 0)
    assert result.answer == extract_boxed(result.selection.candidates[0].text) == extract_boxed(result.trace)


def test_aggregate_selection_without_an_answer_falls_back_to_the_vote():
    def script(prompt, seed):
        return "no box here" if "Solution 1" in prompt else default_script(prompt, seed)

    result = rsa(select="aggregate", rounds=0).solve(FakeEngine(script), PROBLEM)
    assert result.selected_by == "vote" and result.answer == majority_vote(result.rounds[0].candidates)[0]
