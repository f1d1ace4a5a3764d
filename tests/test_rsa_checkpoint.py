"""An RSA checkpoint names the model that made it, and is refused when its shape is not the run's:
too many rounds, rounds out of order, a round of the wrong population, a selection of more than one."""

from __future__ import annotations

import copy
import re

import pytest

from rsa_fakes import PROBLEM, FakeEngine, population, rsa

from zaya_edge.errors import CheckpointError, RequestError
from zaya_edge.runtime.rsa import MemoryCheckpoint, SolveInterrupted


def _finished(**kw) -> dict:
    store = MemoryCheckpoint()
    rsa(**kw).solve(FakeEngine(), PROBLEM, checkpoint=store)
    return store.load()


def _resume(record, **kw):
    engine = FakeEngine()
    with pytest.raises(CheckpointError) as info:
        rsa(**kw).solve(engine, PROBLEM, checkpoint=MemoryCheckpoint(record))
    assert "\n" not in str(info.value) and engine.calls == []
    return str(info.value)


def test_the_checkpoint_records_the_model_and_refuses_another():
    store = MemoryCheckpoint()
    with pytest.raises(SolveInterrupted):
        rsa().solve(FakeEngine(interrupt_at=2, model_id="a" * 64), PROBLEM, checkpoint=store)
    assert store.record["model"] == "a" * 64
    engine = FakeEngine(model_id="b" * 64)
    with pytest.raises(CheckpointError, match=r"made with another model \('aaaaaaaaaaaa\.\.\.' there, "
                                              r"'bbbbbbbbbbbb\.\.\.' here\); use that artifact"):
        rsa().solve(engine, PROBLEM, checkpoint=store)
    assert engine.calls == []
    resumed = rsa().solve(FakeEngine(model_id="a" * 64), PROBLEM, checkpoint=store)
    assert population(resumed) == population(rsa().solve(FakeEngine(), PROBLEM))
    assert resumed.params["model"] == "a" * 64


def test_a_checkpoint_needs_an_engine_that_names_its_model():
    engine = FakeEngine(model_id=None)
    with pytest.raises(RequestError, match="model_id"):
        rsa().solve(engine, PROBLEM, checkpoint=MemoryCheckpoint())
    assert rsa().solve(engine, PROBLEM).answer is not None  # without a checkpoint it is not needed


def test_a_version_1_record_says_to_run_without_the_checkpoint():
    record = {**_finished(), "version": 1}
    del record["model"]
    assert "record version 1" in _resume(record) and "re-run without the checkpoint" in _resume(record)


def _edit(record, edit):
    record = copy.deepcopy(record)
    edit(record)
    return record


@pytest.mark.parametrize("edit, needle", [
    (lambda r: r["rounds"].append({**r["rounds"][-1], "round": 3}), r"4 rounds, more than rounds \+ 1 = 3"),
    (lambda r: r["rounds"].reverse(), "not numbered 0, 1, ... in order"),
    (lambda r: r["rounds"][1]["candidates"].pop(), "round 1 holds 3 candidates, not 4"),
    (lambda r: r["rounds"][2]["candidates"].append(r["rounds"][2]["candidates"][0]), "round 2 holds 5 candidates"),
    (lambda r: r["rounds"][0]["candidates"].reverse(), "candidates of round 0 are not numbered"),
    (lambda r: r["rounds"][1].update(kind="rollout"), "round 1 is a 'rollout' stage, not 'aggregate'"),
    (lambda r: r["selection"]["candidates"].append(r["selection"]["candidates"][0]),
     "round 3 holds 2 candidates, not 1"),
    (lambda r: r["rounds"].pop(), "a selection \\(round 3\\) after 2 of 3 rounds"),
    (lambda r: r["rounds"][0]["candidates"][0].update(tail=7), r"rounds\[0\].candidates\[0\].tail: expected a string"),
    (lambda r: r["rounds"][1].update(wall_s=float("nan")), r"rounds\[1\].wall_s: expected a finite number"),
    (lambda r: r["params"].update(seed=-1), "no seed in \\[0, 2\\*\\*64\\)"),
    (lambda r: r.update(model=5), "problem or model is not text"),
])
def test_a_record_of_another_shape_is_refused_as_corrupt(edit, needle):
    message = _resume(_edit(_finished(select="aggregate"), edit), select="aggregate")
    assert "is corrupt" in message
    assert re.search(needle, message), message


def test_a_record_of_the_right_shape_resumes():
    record = _finished(select="aggregate")
    engine = FakeEngine()
    resumed = rsa(select="aggregate").solve(engine, PROBLEM, checkpoint=MemoryCheckpoint(record))
    assert engine.calls == [] and resumed.resumed_rounds == 3
    # the saved final aggregation is used as it was, not drawn again
    assert resumed.selected_by == "aggregate" and resumed.winner == (3, 0) and resumed.selection.round == 3


def test_a_seed_outside_the_sampler_range_is_one_request_error():
    for seed in (-1, 2**64, 1.5, True):
        with pytest.raises(RequestError, match="seed must be an integer in \\[0, 2\\*\\*64\\)"):
            rsa(seed=seed)
