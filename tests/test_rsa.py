"""Markovian RSA against a scripted fake engine: one token per character, so prompts and tails
can be asserted exactly. The fake's output depends only on (prompt, seed), like a real sampler."""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys

import pytest

from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime.rsa import (
    Candidate, MarkovianRSA, ProgressBar, SolveInterrupted, default_template, extract_boxed,
    majority_vote, parse_memory, render_prompt,
)
from zaya_edge.runtime.types import BatchProgress, Completion

EOS = 0
PROBLEM = "Find x if 2x + 3 = 17. Put the answer in \\boxed{}."
WORDS = ["so", "then", "hence", "wait", "check", "sum", "carry", "try"]


class CharCodec:
    def encode(self, text):
        return [ord(ch) for ch in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i != EOS)

    def chat_prompt(self, user_message):
        return self.encode(f"<u>{user_message}</u><a>")


def chat_text(message):
    return f"<u>{message}</u><a>"


def default_script(prompt, seed):
    rng = random.Random(f"{seed}:{prompt}")
    words = " ".join(f"{rng.choice(WORDS)}{rng.randrange(100)}" for _ in range(rng.randint(15, 45)))
    answer = rng.choice(["7", "7", "12", "x^{2}"])
    return f"{words}\n</think>\nSo the answer is \\boxed{{{answer}}}."


class FakeEngine:
    """Scripted BatchGenerator: records every batch, reports one progress call per decode step."""

    def __init__(self, script=default_script, context_length=100_000, interrupt_at=None, bytes_per_token=10):
        self.codec, self.context_length = CharCodec(), context_length
        self.script, self.interrupt_at, self.bytes_per_token = script, interrupt_at, bytes_per_token
        self.calls, self.outputs = [], []

    @classmethod
    def load(cls, path, threads=None):
        return cls()

    def cache_bytes_per_sequence(self, length):
        return length * self.bytes_per_token

    def generate_batch(self, requests, on_progress=None):
        self.calls.append(list(requests))
        if self.interrupt_at == len(self.calls):
            raise KeyboardInterrupt
        outs = []
        for r in requests:
            ids = self.codec.encode(self.script(self.codec.decode(r.prompt_ids), r.params.seed))
            budget = r.params.max_new_tokens
            tokens, reason = (ids[:budget], "length") if len(ids) > budget else (ids + [EOS], "eos")
            outs.append(Completion(tokens, self.codec.decode(tokens), reason, len(r.prompt_ids)))
        longest = max(len(c.tokens) for c in outs)
        for step in range(1, longest + 1):
            live = sum(len(c.tokens) > step for c in outs)
            made = sum(min(len(c.tokens), step) for c in outs)
            if on_progress and on_progress(BatchProgress(live, len(outs) - live, made, step * 1e-3)) is False:
                return [Completion(c.tokens[:step], "", "cancelled", c.prompt_tokens) for c in outs]
        self.outputs.append(outs)
        return outs


def rsa(**kw):
    settings = dict(population=4, subset=2, rounds=2, budget=200, tail=50, final_budget=300, seed=1)
    return MarkovianRSA(**{**settings, **kw})


def population(result):
    return [[(c.text, c.subset, c.tail, c.finish_reason) for c in r.candidates] for r in result.stages]


def prompt_text(request):
    return CharCodec().decode(request.prompt_ids)


def shown_tails(prompt):
    """The tails in an aggregation prompt, in order, parsed back out of the shipped template."""
    body = prompt.split("[[ Candidate solutions (may contain mistakes) ]]:\n", 1)[1]
    body = body.rsplit("\n\nNow write a single improved solution", 1)[0]
    parts = re.split(r"---- Solution \d+ ----\n", body)[1:]
    return [p[:-2] if i < len(parts) - 1 else p for i, p in enumerate(parts)]


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


# ---------------------------------------------------------------- reproducibility, waves, resume


def test_same_seed_same_run_other_seed_other_run():
    a, b = rsa(seed=5).solve(FakeEngine(), PROBLEM), rsa(seed=5).solve(FakeEngine(), PROBLEM)
    assert population(a) == population(b) and a.answer == b.answer
    assert population(rsa(seed=6).solve(FakeEngine(), PROBLEM)) != population(a)


def test_no_seed_records_one_that_reproduces_the_run():
    first = rsa(seed=None).solve(FakeEngine(), PROBLEM)
    assert isinstance(first.params["seed"], int)
    assert population(rsa(seed=first.params["seed"]).solve(FakeEngine(), PROBLEM)) == population(first)


def test_waves_give_the_same_result_as_one_batch():
    whole_engine = FakeEngine()
    whole = rsa(population=6, subset=3, select="aggregate").solve(whole_engine, PROBLEM)
    longest = max(len(r.prompt_ids) + r.params.max_new_tokens for b in whole_engine.calls for r in b)
    engine = FakeEngine()
    waved = rsa(population=6, subset=3, select="aggregate", max_memory=2 * longest * 10).solve(engine, PROBLEM)
    assert population(waved) == population(whole) and waved.answer == whole.answer
    assert len(engine.calls) == sum(r.waves for r in waved.stages) > 4
    for batch in engine.calls:
        assert sum(engine.cache_bytes_per_sequence(len(r.prompt_ids) + r.params.max_new_tokens) for r in batch) \
            <= 2 * longest * 10
    assert waved.rounds[0].waves == 1 and min(r.waves for r in waved.rounds[1:]) >= 3  # short prompts pack denser


def test_max_memory_below_one_sequence_is_refused_before_generating():
    engine = FakeEngine()
    with pytest.raises(ZayaEdgeError, match="max memory 100 B cannot hold one sequence"):
        rsa(max_memory="100B").solve(engine, PROBLEM)
    assert engine.calls == []


@pytest.mark.parametrize("stop_at", [2, 3])
def test_resume_after_interrupt_matches_an_uninterrupted_run(tmp_path, stop_at):
    straight = rsa().solve(FakeEngine(), PROBLEM)
    ckpt = tmp_path / "run.json"
    with pytest.raises(SolveInterrupted) as info:
        rsa().solve(FakeEngine(interrupt_at=stop_at), PROBLEM, checkpoint=ckpt)
    assert info.value.completed_rounds == stop_at - 1 and str(ckpt) in str(info.value)
    assert len(json.loads(ckpt.read_text())["rounds"]) == stop_at - 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind
    engine = FakeEngine()
    resumed = rsa().solve(engine, PROBLEM, checkpoint=ckpt)
    assert len(engine.calls) == 3 - (stop_at - 1) and resumed.resumed_rounds == stop_at - 1
    assert population(resumed) == population(straight) and resumed.answer == straight.answer
    again = FakeEngine()
    assert population(rsa().solve(again, PROBLEM, checkpoint=ckpt)) == population(straight) and again.calls == []


def test_resume_without_seed_adopts_the_checkpoint_seed(tmp_path):
    ckpt = tmp_path / "run.json"
    with pytest.raises(SolveInterrupted):
        rsa(seed=None).solve(FakeEngine(interrupt_at=2), PROBLEM, checkpoint=ckpt)
    seed = json.loads(ckpt.read_text())["params"]["seed"]
    resumed = rsa(seed=None).solve(FakeEngine(), PROBLEM, checkpoint=ckpt)
    assert population(resumed) == population(rsa(seed=seed).solve(FakeEngine(), PROBLEM))


def test_cancelling_from_progress_stops_after_saving_complete_rounds(tmp_path):
    ckpt = tmp_path / "run.json"
    with pytest.raises(SolveInterrupted):
        rsa().solve(FakeEngine(), PROBLEM, on_progress=lambda p: p.stage < 1, checkpoint=ckpt)
    assert len(json.loads(ckpt.read_text())["rounds"]) == 1


def test_checkpoint_from_other_settings_or_problem_is_refused(tmp_path):
    ckpt = tmp_path / "run.json"
    rsa().solve(FakeEngine(), PROBLEM, checkpoint=ckpt)
    with pytest.raises(ZayaEdgeError, match=r"other settings \(budget 200 there, 100 here\)"):
        rsa(budget=100).solve(FakeEngine(), PROBLEM, checkpoint=ckpt)
    with pytest.raises(ZayaEdgeError, match="seed 1 there, 2 here"):
        rsa(seed=2).solve(FakeEngine(), PROBLEM, checkpoint=ckpt)
    with pytest.raises(ZayaEdgeError, match="different problem"):
        rsa().solve(FakeEngine(), "another problem", checkpoint=ckpt)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is corrupt"),
    ('{"format": "something else"}', "is corrupt"),
    ('{"format": "zaya-edge-rsa-checkpoint", "version": 1, "params": {"seed": 1}, "rounds": [{"x": 1}]}',
     "is corrupt"),
    (b"\xff\xfe\x00garbage", "cannot read checkpoint"),
])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content, message):
    ckpt = tmp_path / "run.json"
    ckpt.write_bytes(content if isinstance(content, bytes) else content.encode())
    engine = FakeEngine()
    with pytest.raises(ZayaEdgeError, match=message):
        rsa().solve(engine, PROBLEM, checkpoint=ckpt)
    assert engine.calls == []


def test_unreadable_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(ZayaEdgeError, match="cannot read checkpoint"):
        rsa().solve(FakeEngine(), PROBLEM, checkpoint=tmp_path)  # a directory


# ---------------------------------------------------------------- bad input, presets, progress, CLI


@pytest.mark.parametrize("kw, message", [
    (dict(subset=5), r"subset \(C=5\) cannot exceed population \(N=4\)"),
    (dict(tail=201), r"tail \(τ=201\) cannot exceed the budget \(β=200\)"),
    (dict(population=0), "population must be >= 1"),
    (dict(tail_unit="chars"), "tail_unit"),
    (dict(template="no placeholders"), "lacks the placeholder"),
    (dict(max_memory="lots"), "cannot read memory size"),
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


def test_parse_memory():
    assert parse_memory("6GB") == 6 * 10**9 and parse_memory("6GiB") == 6 * 2**30
    assert parse_memory("512 MiB") == 512 * 2**20 and parse_memory("1000") == 1000


def test_progress_reports_each_round_to_completion():
    events = []
    result = rsa(select="aggregate").solve(FakeEngine(), PROBLEM, on_progress=events.append)
    done = [e for e in events if e.done]
    assert [(e.stage, e.kind, e.total) for e in done] == [
        (0, "rollout", 4), (1, "aggregate", 4), (2, "aggregate", 4), (3, "select", 1)]
    assert [e.generated_tokens for e in done] == [r.generated_tokens for r in result.stages]
    round0 = [e for e in events if e.stage == 0 and not e.done]
    assert round0[0].live == 4 and round0[-1].live == 0
    assert all(e.rounds == 2 and e.eta_s >= 0 for e in events)
    out = io.StringIO()
    bar = ProgressBar(file=out)
    for e in events:
        bar(e)
    assert "round 1/2" in out.getvalue() and "select" in out.getvalue() and "tok/s" in out.getvalue()


def test_cli_solve_prints_the_answer_and_writes_the_report(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import zaya_edge.runtime as runtime
    from zaya_edge.app.cli import main

    monkeypatch.setattr(runtime, "Engine", FakeEngine, raising=False)
    report = tmp_path / "out.json"
    args = ["solve", "artifact", PROBLEM, "--population", "4", "--subset", "2", "--budget", "200", "--tail", "50",
            "--final-budget", "300", "--seed", "1", "--report", str(report), "--quiet"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    expected = rsa().solve(FakeEngine(), PROBLEM)
    assert run.stdout.strip().splitlines()[-1] == expected.answer
    data = json.loads(report.read_text())
    assert data["answer"] == expected.answer and len(data["rounds"]) == 3
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "exists; pass --force" in again.output
    bad = CliRunner().invoke(main, ["solve", "artifact", PROBLEM, "--population", "2", "--subset", "3"])
    assert bad.exit_code == 2 and "error: subset (C=3) cannot exceed population (N=2)" in bad.output


def test_runtime_strategy_does_not_import_torch():
    code = "import sys, zaya_edge.runtime.rsa; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- end to end on the tiny exported model

SHORT_TEMPLATE = "Fix these. [[ Problem ]]:\n{problem}\n[[ Candidates ]]:\n{candidates}\nAnswer in \\boxed{}."


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    pytest.importorskip("torch")
    from zaya_edge.export import export_model
    from zaya_edge.export.fixtures.random_model import tiny_model
    from zaya_edge.export.fixtures.tiny_tokenizer import save_tokenizer
    from zaya_edge.runtime import Engine

    root = tmp_path_factory.mktemp("rsa_tiny")
    tiny_model(seed=7, num_hidden_layers=2).save_pretrained(root / "src")
    save_tokenizer(root / "src")
    export_model(root / "src", root / "art", precision="fp32", progress=False, context_length=1024)
    return Engine.load(root / "art")


def test_tiny_model_solve_runs_each_round_as_one_batch(tiny_engine):
    stats = []
    generate = tiny_engine.generate_batch

    def recording(requests, on_progress=None):
        out = generate(requests, on_progress)
        stats.append((tiny_engine.last_stats.session_calls, max(len(c.tokens) for c in out)))
        return out

    tiny_engine.generate_batch = recording
    try:
        strategy = MarkovianRSA(population=4, subset=2, rounds=2, budget=16, tail=8, seed=3, template=SHORT_TEMPLATE)
        result = strategy.solve(tiny_engine, "What is 12 + 30?")
    finally:
        del tiny_engine.generate_batch
    assert [len(r.candidates) for r in result.rounds] == [4, 4, 4] and len(stats) == 3
    for calls, steps in stats:
        assert calls <= 1 + steps  # one prefill + one call per decode step for all 4 sequences together
    assert all(0 < c.tail_length <= 8 for r in result.rounds for c in r.candidates)
    again = strategy.solve(tiny_engine, "What is 12 + 30?")
    assert population(again) == population(result)  # seeded: same population on the real engine
