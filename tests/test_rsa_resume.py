"""Markovian RSA's reproducibility, memory waves and resumable checkpoints (the versioned record,
the app layer's JSON-file store and the in-memory one)."""

from __future__ import annotations

import json

import pytest

from rsa_fakes import PROBLEM, FakeEngine, population, rsa

from zaya_edge.app.files import JsonCheckpoint
from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime.rsa import Checkpoint, MemoryCheckpoint, SolveInterrupted, extract_boxed

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
        rsa(max_memory=100).solve(engine, PROBLEM)
    assert engine.calls == []


@pytest.mark.parametrize("stop_at", [2, 3])
def test_resume_after_interrupt_matches_an_uninterrupted_run(tmp_path, stop_at):
    straight = rsa().solve(FakeEngine(), PROBLEM)
    ckpt = tmp_path / "run.json"
    with pytest.raises(SolveInterrupted) as info:
        rsa().solve(FakeEngine(interrupt_at=stop_at), PROBLEM, checkpoint=JsonCheckpoint(ckpt))
    assert info.value.completed_rounds == stop_at - 1 and str(ckpt) in str(info.value)
    assert len(json.loads(ckpt.read_text())["rounds"]) == stop_at - 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind
    engine = FakeEngine()
    resumed = rsa().solve(engine, PROBLEM, checkpoint=JsonCheckpoint(ckpt))
    assert len(engine.calls) == 3 - (stop_at - 1) and resumed.resumed_rounds == stop_at - 1
    assert population(resumed) == population(straight) and resumed.answer == straight.answer
    again = FakeEngine()
    finished = rsa().solve(again, PROBLEM, checkpoint=JsonCheckpoint(ckpt))
    assert population(finished) == population(straight) and again.calls == []


def test_resume_without_seed_adopts_the_checkpoint_seed(tmp_path):
    ckpt = tmp_path / "run.json"
    with pytest.raises(SolveInterrupted):
        rsa(seed=None).solve(FakeEngine(interrupt_at=2), PROBLEM, checkpoint=JsonCheckpoint(ckpt))
    seed = json.loads(ckpt.read_text())["params"]["seed"]
    resumed = rsa(seed=None).solve(FakeEngine(), PROBLEM, checkpoint=JsonCheckpoint(ckpt))
    assert population(resumed) == population(rsa(seed=seed).solve(FakeEngine(), PROBLEM))


def test_cancelling_from_progress_stops_after_saving_complete_rounds(tmp_path):
    ckpt = tmp_path / "run.json"
    with pytest.raises(SolveInterrupted):
        rsa().solve(FakeEngine(), PROBLEM, on_progress=lambda p: p.stage < 1, checkpoint=JsonCheckpoint(ckpt))
    assert len(json.loads(ckpt.read_text())["rounds"]) == 1


def test_checkpoint_from_other_settings_or_problem_is_refused(tmp_path):
    ckpt = tmp_path / "run.json"
    ckpt = JsonCheckpoint(ckpt)
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
    (json.dumps({"format": "zaya-edge-rsa-checkpoint", "version": 2, "params": {"seed": 1}, "problem": PROBLEM,
                 "model": "fake-model", "rounds": [{"x": 1}], "selection": None}),
     r"is corrupt \(rounds\[0\]: unknown field 'x'\)"),
    (b"\xff\xfe\x00garbage", "cannot read checkpoint"),
])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content, message):
    ckpt = tmp_path / "run.json"
    ckpt.write_bytes(content if isinstance(content, bytes) else content.encode())
    engine = FakeEngine()
    with pytest.raises(ZayaEdgeError, match=message):
        rsa().solve(engine, PROBLEM, checkpoint=JsonCheckpoint(ckpt))
    assert engine.calls == []


def test_unreadable_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(ZayaEdgeError, match="cannot read checkpoint"):
        rsa().solve(FakeEngine(), PROBLEM, checkpoint=JsonCheckpoint(tmp_path))  # a directory


def test_in_memory_checkpoint_resumes_like_a_file():
    straight = rsa().solve(FakeEngine(), PROBLEM)
    store = MemoryCheckpoint()
    with pytest.raises(SolveInterrupted) as info:
        rsa().solve(FakeEngine(interrupt_at=3), PROBLEM, checkpoint=store)
    assert info.value.completed_rounds == 2 and "in-memory checkpoint" in str(info.value)
    assert (store.record["format"], store.record["version"]) == ("zaya-edge-rsa-checkpoint", 2)
    engine = FakeEngine()
    resumed = rsa().solve(engine, PROBLEM, checkpoint=store)
    assert len(engine.calls) == 1 and population(resumed) == population(straight)


def test_checkpoint_record_round_trips_and_refuses_other_versions():
    store = MemoryCheckpoint()
    rsa(select="aggregate").solve(FakeEngine(), PROBLEM, checkpoint=store)
    saved = Checkpoint.from_dict(store.load(), extract_boxed, "here")
    assert saved.to_dict() == store.load() and saved.selection is not None and len(saved.rounds) == 3
    assert json.loads(json.dumps(saved.to_dict())) == saved.to_dict()
    with pytest.raises(ZayaEdgeError, match=r"checkpoint here is corrupt \(format .* version 3; this runtime reads"):
        Checkpoint.from_dict({**store.load(), "version": 3}, lambda text: None, "here")
    with pytest.raises(ZayaEdgeError, match=r"checkpoint here is corrupt \(its rounds are not numbered"):
        Checkpoint.from_dict({**store.load(), "rounds": store.load()["rounds"][1:]}, lambda text: None, "here")


def test_interrupt_without_a_checkpoint_says_nothing_was_saved():
    with pytest.raises(SolveInterrupted) as info:
        rsa().solve(FakeEngine(interrupt_at=2), PROBLEM)
    assert info.value.checkpoint is None and "nothing saved" in str(info.value) and "--" not in str(info.value)


def test_a_path_is_not_a_checkpoint_store(tmp_path):
    with pytest.raises(ZayaEdgeError, match="checkpoint must be a store with load\\(\\) and save\\(\\)"):
        rsa().solve(FakeEngine(), PROBLEM, checkpoint=str(tmp_path / "run.json"))
