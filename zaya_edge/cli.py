"""The `zaya-edge` command: a thin layer over the library."""

from __future__ import annotations

import sys

import click

from zaya_edge.errors import ZayaEdgeError


class _Group(click.Group):
    """Print ZayaEdgeError as one line (exit 2); --debug shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ZayaEdgeError as exc:
            if ctx.meta.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx, debug):
    """Export ZAYA1 to ONNX and run it on laptops and edge devices."""
    ctx.meta["debug"] = debug


@main.command()
@click.argument("src", type=click.Path(path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(path_type=str), help="Artifact folder to create.")
@click.option("--precision", default="fp32", show_default=True, help="fp32 | int8 | int4.")
@click.option("--all-logits", is_flag=True, help="Output logits for every position (default: last only).")
@click.option("--context-length", type=int, default=None, help="Longest context the artifact supports (default: the model's).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export(src, out, precision, all_logits, context_length, force, quiet):
    """Export the ZAYA checkpoint folder SRC into an artifact folder."""
    try:
        from zaya_edge.export import export_model
    except ImportError as exc:
        raise ZayaEdgeError(f"export needs the export extra: pip install 'zaya-edge[export]' ({exc})") from None
    path = export_model(
        src, out, precision=precision, all_logits=all_logits,
        context_length=context_length, force=force, progress=not quiet,
    )
    click.echo(f"wrote {path}")


@main.command()
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


if __name__ == "__main__":
    main()
