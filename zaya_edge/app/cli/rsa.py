"""`zaya-edge solve | eval`: Markovian RSA on one problem, accuracy on a problem set."""

from __future__ import annotations

import click

from zaya_edge.errors import ZayaEdgeError


@click.command()
@click.argument("artifact", type=click.Path(path_type=str))
@click.argument("problem")
@click.option("--preset", type=click.Choice(["report", "deploy", "edge"]), default=None,
              help="Reference settings (report: N16 C4 T2 β40K τ4K; deploy: β16K; edge: N8 β8K); flags override.")
@click.option("--population", type=int, default=None, help="N: candidates per round.  [default: 16]")
@click.option("--subset", type=int, default=None, help="C: tails shown in each aggregation prompt.  [default: 4]")
@click.option("--rounds", type=int, default=None, help="T: aggregation rounds (0 = plain parallel sampling).  [default: 2]")
@click.option("--budget", type=int, default=None, help="β: max new tokens per rollout in rounds 0..T-1.  [default: 16384]")
@click.option("--tail", type=int, default=None, help="τ: tail carried to the next round.  [default: 4096]")
@click.option("--final-budget", type=int, default=None, help="Max new tokens in the last round.  [default: --budget]")
@click.option("--temperature", type=float, default=None, help="[default: 1.0]")
@click.option("--top-p", type=float, default=None, help="[default: 1.0]")
@click.option("--tail-unit", type=click.Choice(["tokens", "words"]), default=None, help="Count τ in model tokens or whitespace words.")
@click.option("--carry-answer", is_flag=True, default=None, help="A candidate that finished thinking carries its answer section instead of its tail.")
@click.option("--select", type=click.Choice(["vote", "aggregate"]), default=None, help="Majority vote, or one final aggregation sample.  [default: vote]")
@click.option("--template", type=click.Path(path_type=str), default=None, help="Aggregation prompt template file ({problem}, {candidates}).")
@click.option("--seed", type=int, default=None, help="Make the run reproducible (default: random, recorded in the report).")
@click.option("--checkpoint", type=click.Path(path_type=str), default=None, help="Save after every round; re-run to resume.")
@click.option("--max-memory", default=None, help="Cache budget for live sequences, e.g. 6GB; splits rounds into waves.")
@click.option("--report", "report_path", type=click.Path(path_type=str), default=None, help="Write the JSON report here.")
@click.option("--force", is_flag=True, help="Replace an existing --report file.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def solve(artifact, problem, preset, population, subset, rounds, budget, tail, final_budget, temperature, top_p,
          tail_unit, carry_answer, select, template, seed, checkpoint, max_memory, report_path, force, threads, quiet):
    """Answer PROBLEM with Markovian RSA on the artifact folder ARTIFACT; prints the answer."""
    import os

    from zaya_edge.runtime.rsa import MarkovianRSA, ProgressBar, SolveInterrupted, read_template, write_json_atomic

    options = dict(population=population, subset=subset, rounds=rounds, budget=budget, tail=tail,
                   final_budget=final_budget, temperature=temperature, top_p=top_p, tail_unit=tail_unit,
                   carry_answer_when_finished=carry_answer, select=select, seed=seed, max_memory=max_memory,
                   template=read_template(template) if template else None)
    options = {k: v for k, v in options.items() if v is not None}
    strategy = MarkovianRSA.preset(preset, **options) if preset else MarkovianRSA(**options)
    if report_path and os.path.exists(report_path) and not force:
        raise ZayaEdgeError(f"{report_path} exists; pass --force to replace it")
    try:
        from zaya_edge.runtime import Engine
    except ImportError as exc:
        raise ZayaEdgeError(f"the runtime engine is not available ({exc})") from None
    engine = Engine.load(artifact, threads=threads)
    bar = None if quiet else ProgressBar()
    try:
        result = strategy.solve(engine, problem, on_progress=bar, checkpoint=checkpoint)
    except SolveInterrupted as exc:
        if bar is not None:
            bar.close()
        click.echo(str(exc), err=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    if report_path:
        write_json_atomic(report_path, result.report())
    rate = f", {result.tokens_per_s:.1f} tok/s" if result.tokens_per_s else ""
    click.echo(f"{len(result.rounds)} round(s), {result.generated_tokens} tokens in {result.wall_s:.1f} s{rate}; "
               f"answer by {result.selected_by}" + (f"; report in {report_path}" if report_path else ""), err=True)
    click.echo(result.answer if result.answer is not None else "(no answer found)")


@click.command("eval")
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--task", type=click.Choice(["tiny-arith"]), default="tiny-arith", show_default=True,
              help="Held-out problem set (tiny-arith: the tiny reasoner's addition task).")
@click.option("--strategy", type=click.Choice(["single", "rsa"]), default="single", show_default=True,
              help="One sample per problem, or Markovian RSA with majority vote.")
@click.option("--limit", type=int, default=None, help="Only the first N held-out problems.  [default: all 500]")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (per problem seeds derive from it).")
@click.option("--temperature", type=float, default=None, help="[default: 0 (greedy) for single, 1.0 for rsa]")
@click.option("--max-new-tokens", type=int, default=None, help="Budget β per generation.  [default: the task's, 128]")
@click.option("--population", type=int, default=8, show_default=True, help="rsa: N.")
@click.option("--subset", type=int, default=4, show_default=True, help="rsa: C.")
@click.option("--rounds", type=int, default=2, show_default=True, help="rsa: T.")
@click.option("--tail", type=int, default=None, help="rsa: τ in tokens.  [default: the task's, 96]")
@click.option("--select", type=click.Choice(["vote", "aggregate"]), default="vote", show_default=True, help="rsa: final selection.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@click.option("--json", "json_path", type=click.Path(path_type=str), default=None, help="Write per-problem results here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_(artifact, task, strategy, limit, seed, temperature, max_new_tokens, population, subset, rounds, tail,
          select, threads, json_path, quiet):
    """Accuracy of the artifact folder ARTIFACT on a fixed held-out problem set."""
    from zaya_edge.app.eval import evaluate
    from zaya_edge.runtime import Engine

    engine = Engine.load(artifact, threads=threads)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(unit="problem", desc=f"{task} {strategy}", leave=False)

    def on_problem(done, total):
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        report = evaluate(engine, task, strategy, limit=limit, seed=seed, temperature=temperature,
                          max_new_tokens=max_new_tokens, population=population, subset=subset, rounds=rounds,
                          tail=tail, select=select, on_problem=on_problem)
    finally:
        if bar is not None:
            bar.close()
    if json_path:
        import json as _json

        from zaya_edge.runtime.rsa import write_json_atomic

        write_json_atomic(json_path, _json.loads(report.to_json()))
    click.echo(report.summary())
