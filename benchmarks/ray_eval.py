"""Problems per hour of a Markovian RSA eval on 1 and 2 local Ray actors, and their ratio (issue 18).

Exports the tiny reasoner (examples/tiny-reasoner/checkpoint, needs torch) unless --artifact is
given, then times `evaluate_on_ray` with 1 and 2 one-thread actors on a local Ray instance of
2 CPUs, and the single-process `evaluate` on one thread as the baseline. Wall time counts from
the first actor ready (engine loading is not a problem's cost). The ratio can reach 2 only with
two cores free for the actors: the driver, the keeper and Ray's own daemons share the machine.

    .venv/bin/python benchmarks/ray_eval.py [--artifact DIR] [--limit 24] [--population 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _artifact(given: str | None, scratch: str) -> Path:
    if given:
        return Path(given)
    from zaya_edge.export import export_model

    return export_model(ROOT / "examples" / "tiny-reasoner" / "checkpoint", Path(scratch) / "fp32",
                        precision="fp32", progress=False)


def _line(label: str, problems: int, wall_s: float, tokens: int) -> float:
    per_hour = problems / wall_s * 3600
    print(f"{label:<22} {problems} problems in {wall_s:6.2f} s = {per_hour:8.0f} problems/h, "
          f"{tokens / wall_s:7.0f} tok/s", flush=True)
    return per_hour


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default=None, help="artifact folder (default: export the tiny reasoner)")
    ap.add_argument("--limit", type=int, default=24, help="held-out problems per run")
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import ray

    from zaya_edge.app.distributed import evaluate_on_ray
    from zaya_edge.app.eval import evaluate, task_rsa
    from zaya_edge.runtime import Engine

    strategy = task_rsa("tiny-arith", population=args.population, subset=min(2, args.population), rounds=args.rounds)
    run = dict(limit=args.limit, seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        artifact = _artifact(args.artifact, scratch)
        print(f"tiny-arith rsa N={strategy.population} C={strategy.subset} T={strategy.rounds}, "
              f"{args.limit} problems, one onnxruntime thread per engine", flush=True)
        start = time.perf_counter()
        base = evaluate(Engine.load(artifact, threads=1), "tiny-arith", strategy, **run)
        _line("single process", base.total, time.perf_counter() - start, base.generated_tokens)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            rates = {}
            for actors in (1, 2):
                report = evaluate_on_ray(artifact, "tiny-arith", strategy, actors=actors, threads=1, **run)
                assert [r.answer for r in report.results] == [r.answer for r in base.results]
                rates[actors] = _line(f"ray, {actors} actor(s)", report.total, report.wall_s, report.generated_tokens)
        finally:
            ray.shutdown()
    print(f"ratio 2 actors / 1 actor: {rates[2] / rates[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
