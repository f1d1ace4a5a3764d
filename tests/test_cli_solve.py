"""`zaya-edge solve` as a person reads it: presets and budgets in --help, round labels, an ETA that
is an upper bound or absent, and a resumed solve that says so."""

from __future__ import annotations

import io

from click.testing import CliRunner
from rsa_fakes import PROBLEM, FakeEngine

from zaya_edge.app.cli import main
from zaya_edge.app.progress import ProgressBar
from zaya_edge.runtime.rsa import PRESETS, RoundProgress

ARGS = ["solve", "artifact", PROBLEM, "--population", "4", "--subset", "2", "--budget", "200", "--tail", "50",
        "--final-budget", "300", "--seed", "1", "--quiet"]


def solve_help() -> str:
    return " ".join(CliRunner().invoke(main, ["solve", "--help"]).output.split())


def test_presets_state_their_whole_shape_from_the_library(monkeypatch):
    monkeypatch.setitem(PRESETS, "edge", {**PRESETS["edge"], "final_budget": 12345})
    text = solve_help()
    for name, p in PRESETS.items():
        assert (f"{name}: N={p['population']} C={p['subset']} T={p['rounds']} β={p['budget']} τ={p['tail']}, "
                f"final budget {p['final_budget']}") in text
    assert "final budget 12345" in text


def test_budget_and_final_budget_say_which_rounds_they_bound():
    text = solve_help()
    budget = text.split("--budget INTEGER", 1)[1].split("--tail INTEGER", 1)[0]
    final = text.split("--final-budget INTEGER", 1)[1].split("--temperature", 1)[0]
    assert "every round but the last" in budget
    assert "the last round" in final and "final aggregation" in final and "default: the budget" in final


def progress(stage=0, kind="rollout", total=4, live=4, tokens=10, elapsed=1.0, eta=108_000.0, done=False):
    return RoundProgress(stage=stage, rounds=2, kind=kind, total=total, live=live, finished=total - live,
                         generated_tokens=tokens, elapsed_s=elapsed, eta_s=eta, done=done)


def shown(*events, max_batch=None) -> str:
    out = io.StringIO()
    bar = ProgressBar(file=out, max_batch=max_batch)
    for e in events:
        bar(e)
    bar.close()
    return out.getvalue()


def test_round_labels_read_naturally():
    text = shown(progress(0), progress(1, "aggregate"), progress(2, "aggregate"), progress(3, "select", total=1, live=1))
    assert "round 1 of 3 (rollouts)" in text and "round 2 of 3 (aggregation)" in text
    assert "round 3 of 3 (aggregation)" in text and "final aggregation" in text


def test_the_eta_is_an_upper_bound_or_absent():
    assert "ETA ≤ 30:00:00" in shown(progress())  # hours past a day are not wrapped
    assert "ETA" not in shown(progress(tokens=0, elapsed=0.0))  # nothing measured yet
    assert "ETA" not in shown(progress(live=0, eta=0.0, done=True))
    assert "ETA" not in shown(progress(total=32), max_batch=16)  # rows refill: the runtime's bound does not hold
    assert "ETA ≤" in shown(progress(total=16), max_batch=16)


def test_a_resumed_solve_says_so(tmp_path, monkeypatch):
    import zaya_edge.runtime as runtime

    class Interrupting(FakeEngine):
        @classmethod
        def load(cls, path, threads=None, **options):
            return cls(interrupt_at=2)

    ckpt = tmp_path / "run.json"
    monkeypatch.setattr(runtime, "Engine", Interrupting, raising=False)
    assert CliRunner().invoke(main, ARGS + ["--checkpoint", str(ckpt)]).exit_code == 130
    monkeypatch.setattr(runtime, "Engine", FakeEngine, raising=False)
    again = CliRunner().invoke(main, ARGS + ["--checkpoint", str(ckpt)])
    assert again.exit_code == 0 and f"resumed from {ckpt}: round 1 of 3 done" in again.output
    done = CliRunner().invoke(main, ARGS + ["--checkpoint", str(ckpt)])  # every round is in the checkpoint
    assert done.exit_code == 0 and f"resumed from {ckpt}: rounds 1..3 of 3 done" in done.output
    fresh = CliRunner().invoke(main, ARGS)
    assert fresh.exit_code == 0 and "resumed" not in fresh.output
