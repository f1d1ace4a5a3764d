"""Markovian RSA eval on a local Ray cluster: the same report as one process, through a lost actor
and through a stopped-and-resumed run (issue 18). Skipped when Ray is not installed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from zaya_edge.app.distributed import EvalInterrupted, evaluate_on_ray  # noqa: E402
from zaya_edge.app.eval import evaluate, task_rsa  # noqa: E402
from zaya_edge.errors import ArtifactError, CheckpointError, RequestError  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parent.parent / "examples" / "tiny-reasoner" / "checkpoint"
LIMIT, SEED = 4, 7
# T = 6 makes a problem ~7 stages of ~0.1 s: time for the test to kill an actor between rounds.
STRATEGY = task_rsa("tiny-arith", population=2, subset=2, rounds=6)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    pytest.importorskip("torch")
    from zaya_edge.export import export_model

    return export_model(CHECKPOINT, tmp_path_factory.mktemp("ray-tiny") / "fp32", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def cluster():
    """A local two-CPU Ray instance of this machine only, for the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def single(artifact):
    """The single-process report the distributed ones must equal."""
    from zaya_edge.runtime import Engine

    return evaluate(Engine.load(artifact, threads=1), "tiny-arith", STRATEGY, limit=LIMIT, seed=SEED)


def _rows(report) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "resumed_rounds"} for r in report.results]


def _same(report, single) -> None:
    assert _rows(report) == _rows(single)
    assert (report.settings, report.accuracy, report.population_accuracy) == \
        (single.settings, single.accuracy, single.population_accuracy)
    assert report.summary().split(";")[:2] == single.summary().split(";")[:2]


def test_two_actors_give_the_single_process_report(artifact, cluster, single):
    seen = []
    report = evaluate_on_ray(artifact, "tiny-arith", STRATEGY, limit=LIMIT, seed=SEED, actors=2, threads=1,
                             on_progress=seen.append)
    _same(report, single)
    assert [r.resumed_rounds for r in report.results] == [0] * LIMIT
    assert max(p.actors for p in seen) == 2 and seen[-1].done == LIMIT
    assert seen[-1].generated_tokens == single.generated_tokens and seen[-1].tokens_per_s > 0


def test_a_killed_actor_s_problem_resumes_on_another_from_its_last_round(artifact, cluster, single):
    killed = {}

    def kill_after_a_round(p):
        for index, rounds in p.saved_rounds.items():
            if not killed and 1 <= rounds <= 3:  # rounds done, and rounds still to come
                killed.update(index=index, rounds=rounds)
                ray.kill(ray.get_actor(p.running[index]))

    report = evaluate_on_ray(artifact, "tiny-arith", STRATEGY, limit=LIMIT, seed=SEED, actors=2, threads=1,
                             on_progress=kill_after_a_round, refresh_s=0.02)
    assert killed, "no actor was caught between rounds"
    _same(report, single)
    resumed = report.results[killed["index"]].resumed_rounds
    assert resumed >= killed["rounds"] and resumed < STRATEGY.rounds + 1
    assert report.to_dict()["results"][killed["index"]]["resumed_rounds"] == resumed
    assert sum(r.resumed_rounds > 0 for r in report.results) == 1


def test_a_stopped_run_resumes_from_its_checkpoints_folder(artifact, cluster, single, tmp_path):
    def stop_after_two(p):
        if p.done >= 2:
            raise KeyboardInterrupt

    run = dict(limit=LIMIT, seed=SEED, actors=2, threads=1, checkpoints=tmp_path)
    with pytest.raises(EvalInterrupted, match="run again with the same checkpoints folder") as stopped:
        evaluate_on_ray(artifact, "tiny-arith", STRATEGY, on_progress=stop_after_two, **run)
    assert 2 <= stopped.value.done < LIMIT
    assert len(list(tmp_path.glob("problem-*.json"))) >= 2
    report = evaluate_on_ray(artifact, "tiny-arith", STRATEGY, **run)
    _same(report, single)
    complete = STRATEGY.rounds + 1
    assert sum(r.resumed_rounds == complete for r in report.results) >= stopped.value.done
    with pytest.raises(CheckpointError, match="made with other settings"):
        evaluate_on_ray(artifact, "tiny-arith", STRATEGY, **{**run, "seed": SEED + 1})


def test_bad_arguments_are_refused_before_any_actor_starts(artifact, cluster, tmp_path):
    with pytest.raises(RequestError, match="must be a MarkovianRSA"):
        evaluate_on_ray(artifact, "tiny-arith", None, limit=2)
    with pytest.raises(RequestError, match="limit must be 1..500"):
        evaluate_on_ray(artifact, "tiny-arith", STRATEGY, limit=0)
    with pytest.raises(ArtifactError):
        evaluate_on_ray(tmp_path / "nope", "tiny-arith", STRATEGY, limit=2)
    with pytest.raises(RequestError, match="fits 2 engine actor"):
        evaluate_on_ray(artifact, "tiny-arith", STRATEGY, limit=2, actors=3, threads=1)
