"""Markovian RSA from the app layer: the progress bar, the memory-size flag, the `solve` command and
its help, the runtime's torch-free import, and a solve on the tiny exported model."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import click
import pytest

from rsa_fakes import PROBLEM, FakeEngine, population, rsa

from zaya_edge.app.params import MemorySize
from zaya_edge.app.progress import ProgressBar
from zaya_edge.runtime.rsa import MarkovianRSA


def test_memory_size_flag():
    size = MemorySize()
    assert size.convert("6GB", None, None) == 6 * 10**9 and size.convert("6GiB", None, None) == 6 * 2**30
    assert size.convert("512 MiB", None, None) == 512 * 2**20 and size.convert("1000", None, None) == 1000
    with pytest.raises(click.BadParameter, match="cannot read memory size"):
        size.convert("lots", None, None)


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
    assert "round 1 of 3 (rollouts)" in out.getvalue() and "final aggregation" in out.getvalue()
    assert "tok/s" in out.getvalue()


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


def test_cli_solve_max_memory_splits_rounds_without_changing_the_answer(monkeypatch):
    from click.testing import CliRunner

    import zaya_edge.runtime as runtime
    from zaya_edge.app.cli import main

    monkeypatch.setattr(runtime, "Engine", FakeEngine, raising=False)
    args = ["solve", "artifact", PROBLEM, "--population", "4", "--subset", "2", "--budget", "200", "--tail", "50",
            "--final-budget", "300", "--seed", "1", "--max-memory", "20KiB", "--quiet"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert run.stdout.strip().splitlines()[-1] == rsa().solve(FakeEngine(), PROBLEM).answer
    bad = CliRunner().invoke(main, args[:-3] + ["--max-memory", "lots"])
    assert bad.exit_code == 2 and "cannot read memory size 'lots'" in bad.output


def test_cli_solve_interrupted_says_how_to_resume(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import zaya_edge.runtime as runtime
    from zaya_edge.app.cli import main

    class Interrupting(FakeEngine):
        @classmethod
        def load(cls, path, threads=None, **options):
            return cls(interrupt_at=2)

    monkeypatch.setattr(runtime, "Engine", Interrupting, raising=False)
    args = ["solve", "artifact", PROBLEM, "--population", "4", "--subset", "2", "--budget", "200", "--tail", "50",
            "--final-budget", "300", "--seed", "1", "--quiet"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 130 and "after 1 completed round(s); pass --checkpoint FILE" in run.output
    ckpt = tmp_path / "run.json"
    run = CliRunner().invoke(main, args + ["--checkpoint", str(ckpt)])
    assert run.exit_code == 130 and f"saved in {ckpt}; re-run the same command to resume" in run.output
    monkeypatch.setattr(runtime, "Engine", FakeEngine, raising=False)
    run = CliRunner().invoke(main, args + ["--checkpoint", str(ckpt)])
    assert run.exit_code == 0 and run.stdout.strip().splitlines()[-1] == rsa().solve(FakeEngine(), PROBLEM).answer


def test_cli_choices_and_help_defaults_come_from_the_library():
    from click.testing import CliRunner

    from zaya_edge.app import eval as app_eval
    from zaya_edge.app import tiny_arith
    from zaya_edge.app.cli import main
    from zaya_edge.app.cli import rsa as commands
    from zaya_edge.runtime import rsa as library

    assert commands.PRESET_NAMES == tuple(library.PRESETS)
    assert (commands.TAIL_UNITS, commands.SELECTIONS) == (library.TAIL_UNITS, library.SELECTIONS)
    assert (commands.TASKS, commands.STRATEGIES) == (app_eval.TASKS, app_eval.STRATEGIES)
    solve_help = CliRunner().invoke(main, ["solve", "--help"]).output
    deploy = MarkovianRSA()
    for value in (deploy.population, deploy.budget, deploy.tail, library.PRESETS["report"]["budget"]):
        assert f"{value}" in solve_help
    eval_help = " ".join(CliRunner().invoke(main, ["eval", "--help"]).output.split())
    assert f"the task's, {tiny_arith.BUDGET}" in eval_help and f"the task's, {tiny_arith.TAIL}" in eval_help
    assert f"all {tiny_arith.HELD_OUT_SIZE}" in eval_help


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
        # prefills (at most a shared head and a remainder per prompt), then one call per decode step
        # for all 4 sequences together: decoding them one by one would take 4 x steps calls
        assert calls <= 2 * 4 + steps
    assert all(0 < c.tail_length <= 8 for r in result.rounds for c in r.candidates)
    again = strategy.solve(tiny_engine, "What is 12 + 30?")
    assert population(again) == population(result)  # seeded: same population on the real engine
