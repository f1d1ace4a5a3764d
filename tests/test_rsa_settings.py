"""Markovian RSA's settings and answers: validation once at construction, presets, the context-fit
check (up front and per prompt), boxed-answer extraction and the majority vote."""

from __future__ import annotations

import pytest

from rsa_fakes import PROBLEM, CharCodec, FakeEngine, rsa

from zaya_edge.errors import ContextFullError, RequestError, ZayaEdgeError
from zaya_edge.runtime.rsa import Candidate, MarkovianRSA, default_template, extract_boxed, majority_vote, render_prompt
from zaya_edge.runtime.types import SamplingParams

# ---------------------------------------------------------------- answers and votes


def cand(i, answer, reason="eos"):
    text = "x" if answer is None else f"... \\boxed{{{answer}}}"
    return Candidate(index=i, seed=0, subset=None, prompt_tokens=1, generated_tokens=1, finish_reason=reason,
                     text=text, tail="", tail_length=0, carried="tail", answer=extract_boxed(text))


def test_extract_boxed_takes_the_last_balanced_box():
    assert extract_boxed(r"\boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{ {a}^{b} } and \boxed{cut off") == "{a}^{b}"
    assert extract_boxed("no answer") is None


def test_majority_vote_and_tie_breaks():
    answer, winner, votes = majority_vote([cand(0, "12"), cand(1, "7"), cand(2, "7", "length"), cand(3, "7")])
    assert answer == "7" and winner.index == 1 and votes == {"7": 3, "12": 1}
    # 2-2 tie: "12" has a finished candidate, "7" none
    answer, winner, _ = majority_vote([cand(0, "7", "length"), cand(1, "12", "length"), cand(2, "7", "length"),
                                      cand(3, "12")])
    assert answer == "12" and winner.index == 3
    # tie on count and finished: the answer seen first
    assert majority_vote([cand(0, "5"), cand(1, "6")])[0] == "5"
    # spacing and $ do not split votes
    assert majority_vote([cand(0, "x + 1"), cand(1, "$x+1$"), cand(2, "y"), cand(3, "x+1", "length")])[2] == {
        "x + 1": 3, "y": 1}
    answer, winner, votes = majority_vote([cand(0, None, "length"), cand(1, None)])
    assert answer is None and winner.index == 1 and votes == {}


def test_pluggable_extractor():
    result = rsa(extractor=lambda text: text[:3]).solve(FakeEngine(), PROBLEM)
    assert all(c.answer == c.text[:3] for c in result.rounds[-1].candidates)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("kw, message", [
    (dict(subset=5), r"subset \(C=5\) cannot exceed population \(N=4\)"),
    (dict(tail=201), r"tail \(τ=201\) cannot exceed the budget \(β=200\)"),
    (dict(population=0), "population must be >= 1"),
    (dict(tail_unit="chars"), "tail_unit"),
    (dict(template="no placeholders"), "lacks the placeholder"),
    (dict(max_memory="6GB"), "max_memory must be a positive number of bytes"),
    (dict(max_memory=0), "max_memory must be a positive number of bytes"),
])
def test_bad_settings_are_one_line_errors(kw, message):
    with pytest.raises(ZayaEdgeError, match=message):
        rsa(**kw)


def test_budget_over_the_context_is_refused_before_generating():
    first = len(CharCodec().chat_prompt(PROBLEM))
    engine = FakeEngine(context_length=first + 199)
    with pytest.raises(ZayaEdgeError, match=f"problem prompt \\({first} tokens\\) \\+ budget 200"):
        rsa().solve(engine, PROBLEM)
    bound = len(CharCodec().chat_prompt(render_prompt(default_template(2), PROBLEM, ["", ""]))) + 2 * 50
    engine = FakeEngine(context_length=bound + 250)  # rounds 0 and 1 fit; round 2's final budget does not
    expected = f"aggregation prompt \\(up to {bound} tokens.*final budget 300 = {bound + 300} tokens exceeds .* {bound + 250}"
    with pytest.raises(ZayaEdgeError, match=expected):
        rsa().solve(engine, PROBLEM)
    assert engine.calls == []


def test_presets_follow_the_reference_table():
    report = MarkovianRSA.preset("report")
    assert (report.population, report.subset, report.rounds, report.budget, report.tail, report.final_budget) == (
        16, 4, 2, 40960, 4096, 40960)
    assert MarkovianRSA.preset("deploy").budget == 16384
    edge = MarkovianRSA.preset("edge", seed=3)
    assert (edge.population, edge.budget, edge.seed) == (8, 8192, 3)
    with pytest.raises(ZayaEdgeError, match="unknown preset"):
        MarkovianRSA.preset("huge")


@pytest.mark.parametrize("kw", [dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5)])
def test_sampling_settings_follow_the_samplers_rules(kw):
    with pytest.raises(RequestError) as ours:
        rsa(**kw)
    with pytest.raises(RequestError) as samplers:
        SamplingParams(**kw)
    assert str(ours.value) == str(samplers.value)


def test_settings_are_kept_as_given():
    """Validated once, never rewritten: max_memory is bytes as given (parsing '6GB' is the CLI's)."""
    strategy = rsa(max_memory=6 * 10**9)
    assert strategy.max_memory == 6 * 10**9 and strategy.final_budget == 300
    assert strategy.stage_budget(strategy.rounds) == 300 and strategy.stage_budget(0) == strategy.budget
    with pytest.raises(RequestError, match="max_memory"):
        rsa(max_memory="6GB")


def test_a_word_tail_over_the_token_bound_is_refused_before_its_round():
    """The up-front bound counts τ in tokens; the same check on each built prompt catches word tails."""
    strategy = rsa(tail_unit="words", tail=7, rounds=1)
    bound = len(CharCodec().chat_prompt(render_prompt(default_template(2), PROBLEM, ["", ""]))) + 2 * 7
    engine = FakeEngine(context_length=bound + 300)  # the bound fits; 7-word tails are longer than 7 tokens
    with pytest.raises(ContextFullError, match=r"round 1 prompt \d+ \(\d+ tokens\) \+ final budget 300 .* "
                                               r"exceeds the engine's context length .*; lower tail, subset"):
        strategy.solve(engine, PROBLEM)
    assert len(engine.calls) == 1  # round 0 ran; round 1 was refused before generating
