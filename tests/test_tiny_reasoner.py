"""The tiny reasoner as a quality yardstick: the committed checkpoint must solve its task, int4
must keep fp32's accuracy, and the runtime must decode exactly what transformers decodes.

Also the task itself (held-out split, trace, answer check) and the `eval` command's contract.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from zaya_edge.app import tiny_arith as T
from zaya_edge.errors import ZayaEdgeError
from zaya_edge.runtime.rsa import extract_boxed

CHECKPOINT = Path(__file__).resolve().parent.parent / "examples" / "tiny-reasoner" / "checkpoint"
# The int4 bar runs on the whole held-out set (greedy, batched: ~6 s per artifact): on 100
# problems one problem is a point, and the 2-point bar would test noise.
SUBSET = T.HELD_OUT_SIZE


# ---------------------------------------------------------------- the task


def test_held_out_set_is_fixed_distinct_and_never_trained_on():
    held = T.held_out_set()
    assert len(held) == T.HELD_OUT_SIZE == len(set(held))
    assert held[:10] == T.held_out_set(10)
    assert all(T.is_held_out(p) for p in held)
    stream = T.problems(0, held_out=False)
    assert not any(T.is_held_out(next(stream)) for _ in range(20_000))


@pytest.mark.parametrize("a,b", [(4837, 2958), (37, 2958), (9999, 1), (0, 0), (5, 70)])
def test_solution_reaches_the_sum(a, b):
    p = T.Problem(a, b)
    text = T.solution(p)
    assert text.startswith("<think>\n") and "</think>" in text
    assert T.is_correct(extract_boxed(text), p)
    assert T.parse_problem(p.text) == p


def test_wrong_solutions_are_wrong():
    rng = random.Random(0)
    for p in T.held_out_set(200):
        assert not T.is_correct(extract_boxed(T.wrong_solution(p, rng)), p)


def test_is_correct_normalises_the_answer():
    p = T.Problem(12, 30)
    assert T.is_correct(" 42 ", p) and T.is_correct("$042$", p)
    assert not T.is_correct("41", p) and not T.is_correct(None, p)


# ---------------------------------------------------------------- the committed model


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """{precision: artifact folder} exported from the committed checkpoint."""
    pytest.importorskip("torch")
    from zaya_edge.export import export_model

    if not (CHECKPOINT / "model.safetensors").exists():
        pytest.fail(f"{CHECKPOINT} is missing: run examples/tiny-reasoner/train.py")
    out = {}
    base = tmp_path_factory.mktemp("tiny-reasoner")
    for precision in ("fp32", "int4"):
        try:
            out[precision] = export_model(CHECKPOINT, base / precision, precision=precision, progress=False)
        except ZayaEdgeError as exc:  # int4 is optional while its exporter is missing
            if precision == "fp32":
                raise
            out[precision] = exc
    return out


@pytest.fixture(scope="module")
def greedy(artifacts):
    """{precision: greedy EvalReport on SUBSET held-out problems}, computed once."""
    from zaya_edge.app.eval import evaluate
    from zaya_edge.runtime import Engine

    return {k: evaluate(Engine.load(v, threads=1), "tiny-arith", None, limit=SUBSET)
            for k, v in artifacts.items() if not isinstance(v, Exception)}


def test_fp32_solves_the_task(greedy):
    assert greedy["fp32"].accuracy >= 0.95, greedy["fp32"].summary()


def test_int4_keeps_fp32_accuracy(artifacts, greedy):
    if isinstance(artifacts["int4"], Exception):
        pytest.skip(f"int4 export not available: {artifacts['int4']}")
    fp32, int4 = greedy["fp32"], greedy["int4"]
    assert abs(int4.accuracy - fp32.accuracy) <= 0.02, f"{fp32.summary()} vs {int4.summary()}"


@contextlib.contextmanager
def _one_torch_thread():
    """With another process on a core, spinning OpenMP threads made generate ~50x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_greedy_answers_match_transformers(artifacts):
    import torch
    from transformers import ZayaForCausalLM

    from zaya_edge.runtime import Engine, Request, SamplingParams

    model = ZayaForCausalLM.from_pretrained(CHECKPOINT, dtype=torch.float32).eval()
    engine = Engine.load(artifacts["fp32"], threads=1)
    params = SamplingParams(temperature=0, max_new_tokens=T.BUDGET)
    problems = T.held_out_set(40)[-4:]
    prompts = [tuple(engine.codec.chat_prompt(p.text)) for p in problems]
    ours = engine.generate_batch([Request(p, params) for p in prompts])
    for p, prompt, c in zip(problems, prompts, ours):
        with torch.no_grad(), _one_torch_thread():
            ref = model.generate(torch.tensor([prompt]), max_new_tokens=T.BUDGET, do_sample=False,
                                 eos_token_id=engine.eos_token_ids, pad_token_id=0)[0, len(prompt):].tolist()
        assert c.tokens == ref, p.text
        assert c.finish_reason == "eos" and extract_boxed(c.text) is not None


def test_rsa_eval_reports_vote_and_population(artifacts):
    from zaya_edge.app.eval import evaluate, task_rsa
    from zaya_edge.runtime import Engine

    engine = Engine.load(artifacts["fp32"], threads=1)
    strategy = task_rsa("tiny-arith", population=4, subset=2, rounds=1)  # the task's β and τ, as `eval` builds it
    a = evaluate(engine, "tiny-arith", strategy, limit=2, seed=3)
    b = evaluate(engine, "tiny-arith", strategy, limit=2, seed=3)
    assert [r.answer for r in a.results] == [r.answer for r in b.results]  # seeded
    assert a.settings["tail"] == T.TAIL and a.settings["temperature"] == 1.0
    assert all(0.0 <= r.population_correct <= 1.0 for r in a.results)


# ---------------------------------------------------------------- the command


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "zaya_edge", *args], capture_output=True, text=True)


def test_eval_command_prints_accuracy_and_writes_json(artifacts, tmp_path):
    out = tmp_path / "eval.json"
    r = _cli("eval", str(artifacts["fp32"]), "--limit", "8", "--quiet", "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "tiny-arith single (temperature 0, seed 0):" in r.stdout and "/8 = " in r.stdout
    data = json.loads(out.read_text())
    assert data["total"] == 8 and len(data["results"]) == 8
    assert data["correct"] == sum(x["correct"] for x in data["results"])


@pytest.mark.parametrize("args,message", [
    (["--limit", "0"], "--limit must be 1..500"),
    (["--limit", "501"], "--limit must be 1..500"),
    (["--task", "gsm8k"], "Invalid value for '--task'"),
])
def test_eval_command_errors_are_one_line(artifacts, args, message):
    r = _cli("eval", str(artifacts["fp32"]), "--quiet", *args)
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr


def test_eval_command_missing_artifact(tmp_path):
    r = _cli("eval", str(tmp_path / "nope"), "--quiet")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
