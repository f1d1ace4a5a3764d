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
@click.option("--precision", default="int4", show_default=True, help="int4 | int8 | fp32.")
@click.option("--block-size", type=int, default=None, help="int4/int8: weights per quantization block, 16..256.  [default: 32]")
@click.option("--asymmetric", is_flag=True, default=None, help="int4/int8: a zero point per block (default: symmetric).")
@click.option("--lm-head", default=None, help="int4 | int8: the tied embedding/lm_head table.  [default: the precision]")
@click.option("--quant-method", default=None, help="rtn (round to nearest) | mse (per-block scale search).  [default: mse]")
@click.option("--all-logits", is_flag=True, help="Output logits for every position (default: last only).")
@click.option("--context-length", type=int, default=None, help="Longest context the artifact supports (default: the model's).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export(src, out, precision, block_size, asymmetric, lm_head, quant_method, all_logits, context_length, force, quiet):
    """Export the ZAYA checkpoint folder SRC into an artifact folder."""
    try:
        from zaya_edge.export import export_model
    except ImportError as exc:
        raise ZayaEdgeError(f"export needs the export extra: pip install 'zaya-edge[export]' ({exc})") from None
    path = export_model(
        src, out, precision=precision, block_size=block_size, asymmetric=bool(asymmetric), lm_head=lm_head,
        quant_method=quant_method, all_logits=all_logits, context_length=context_length, force=force,
        progress=not quiet,
    )
    click.echo(f"wrote {path}")


@main.command()
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--reference", required=True, type=click.Path(path_type=str),
              help="An fp32 artifact or a Hugging Face checkpoint folder to compare against.")
@click.option("--tokens", "tokens_file", type=click.Path(path_type=str), default=None,
              help="Token ids: a .npy file or integers separated by whitespace or commas.")
@click.option("--text", default=None, help="Text to compare on (needs a tokenizer.json in ARTIFACT or REF).")
@click.option("--text-file", type=click.Path(path_type=str), default=None, help="Read --text from this file.")
@click.option("--length", type=int, default=256, show_default=True, help="Random tokens when no tokens or text are given.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random tokens.")
@click.option("--json", "json_path", type=click.Path(path_type=str), default=None,
              help="Write the report here (default: ARTIFACT.quality.json beside the folder).")
@click.option("--force", is_flag=True, help="Replace an existing JSON report.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
def quality(artifact, reference, tokens_file, text, text_file, length, seed, json_path, force, threads):
    """Teacher-forced comparison of ARTIFACT with a reference: top-1, KL, logit diff, perplexity."""
    from pathlib import Path

    from zaya_edge import quality as Q

    if text_file is not None:
        if text is not None:
            raise ZayaEdgeError("give --text or --text-file, not both")
        try:
            text = Path(text_file).read_text()
        except OSError as exc:
            raise ZayaEdgeError(f"cannot read {text_file}: {exc.strerror}") from None
    out = Path(json_path) if json_path else Q.default_json_path(artifact)
    if out.exists() and not force:
        raise ZayaEdgeError(f"{out} already exists; pass --force to replace it")
    report = Q.quality(artifact, reference, tokens_file=tokens_file, text=text, length=length, seed=seed,
                       threads=threads)
    click.echo(report.table())
    out.write_text(report.to_json())
    click.echo(f"wrote {out}")


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



def sampling_options(fn):
    """The sampling flags `run` and `chat` share."""
    opts = [
        click.option("--temperature", type=float, default=0.7, show_default=True, help="0 = greedy."),
        click.option("--top-k", type=int, default=0, show_default=True, help="0 = off."),
        click.option("--top-p", type=float, default=0.95, show_default=True),
        click.option("--min-p", type=float, default=0.0, show_default=True),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True),
        click.option("--max-new-tokens", type=int, default=512, show_default=True),
        click.option("--seed", type=int, default=None, help="Same seed, same tokens."),
        click.option("--stop", "stop_strings", multiple=True, help="Stop when this text appears (repeatable)."),
        click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _params(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, stop_strings):
    from zaya_edge.runtime import SamplingParams

    return SamplingParams(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed,
        stop_strings=tuple(stop_strings),
    )


def _stream(generation) -> None:
    """Echo text deltas as they come; Ctrl-C stops this reply, not the program."""
    try:
        for text in generation:
            click.echo(text, nl=False)
    except KeyboardInterrupt:
        generation.cancel()
    click.echo()


def _print_stats(stats) -> None:
    s = stats
    click.echo(
        f"[load {s.load_seconds:.2f} s | prompt {s.prompt_tokens} tok, {s.prefill_tokens_per_s:.1f} tok/s | "
        f"first token {s.time_to_first_token_s * 1000:.0f} ms | {s.generated_tokens} tok, {s.decode_tokens_per_s:.1f} tok/s | "
        f"cache {s.cache_bytes / 2**20:.1f} MiB | peak RSS {s.peak_rss_bytes / 2**30:.2f} GiB]",
        err=True,
    )


@main.command()
@click.argument("artifact", type=click.Path(path_type=str))
@click.argument("prompt")
@sampling_options
@click.option("--chat/--raw", default=True, show_default=True, help="Wrap the prompt in the chat template, or feed it as is.")
@click.option("--stats", "show_stats", is_flag=True, help="Print timing and memory after the text.")
@click.option("--verify", is_flag=True, help="Check every artifact file against its manifest hash first.")
def run(artifact, prompt, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed,
        stop_strings, threads, chat, show_stats, verify):
    """Generate from PROMPT with the artifact folder ARTIFACT, streaming to stdout."""
    from zaya_edge.runtime import Engine

    engine = Engine.load(artifact, threads=threads, verify=verify)
    params = _params(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, stop_strings)
    generation = engine.generate(prompt, params, chat=chat)
    _stream(generation)
    if show_stats:
        _print_stats(generation.stats)


@main.command()
@click.argument("artifact", type=click.Path(path_type=str))
@sampling_options
@click.option("--system", default=None, help="A system message.")
def chat(artifact, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed,
         stop_strings, threads, system):
    """Interactive multi-turn chat (keeps the cache between turns). /reset, /stats, /quit."""
    from zaya_edge.runtime import Engine

    engine = Engine.load(artifact, threads=threads)
    params = _params(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, stop_strings)
    session = engine.chat(params, system=system)
    last = None
    click.echo("zaya-edge chat: /reset starts over, /stats shows the last turn's figures, /quit ends.", err=True)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            break
        command = line.strip()
        if command in ("/quit", "/exit"):
            break
        if command == "/reset":
            session.reset()
            click.echo("(conversation cleared)", err=True)
            continue
        if command == "/stats":
            if last is not None:
                _print_stats(last.stats)
            continue
        if not command:
            continue
        last = session.send(line)
        _stream(last)


@main.command()
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--context", type=int, default=4096, show_default=True, help="Context length for the memory estimate.")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size for the memory estimate.")
@click.option("--load", "load_session", is_flag=True, help="Also create a session (checks the graph; shows which router kernel runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(artifact, context, batch, load_session, as_json):
    """Show an artifact's manifest, sizes, ops, IO and estimated memory."""
    import json as _json

    from zaya_edge.inspect import inspect_artifact

    report = inspect_artifact(artifact, context=context, batch=batch, load_session=load_session)
    click.echo(_json.dumps(report, indent=2) if as_json else report["text"])


@main.command("eval")
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
    from zaya_edge.eval import evaluate
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



@main.command()
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@click.option("--prompt", type=int, default=128, show_default=True, help="Prompt tokens before the decode runs.")
@click.option("--new-tokens", type=int, default=128, show_default=True, help="Tokens decoded per sequence.")
@click.option("--prefill", type=int, default=512, show_default=True, help="Prompt tokens of the prefill run.")
@click.option("--batches", default="8,16", show_default=True, help="Batch sizes for aggregate decode (comma-separated).")
@click.option("--runs", type=int, default=3, show_default=True, help="Repetitions; medians are reported.")
@click.option("--json", "json_path", type=click.Path(path_type=str), default=None, help="Also write the results as JSON.")
def bench(artifact, threads, prompt, new_tokens, prefill, batches, runs, json_path):
    """Measure decode, prefill and batched throughput of ARTIFACT (medians of interleaved runs)."""
    import json as _json

    from zaya_edge.bench import bench_artifact, format_report

    try:
        sizes = tuple(int(b) for b in batches.split(",") if b.strip())
    except ValueError:
        raise ZayaEdgeError(f"--batches must be comma-separated integers, got {batches!r}") from None
    if runs < 1 or prompt < 1 or new_tokens < 2 or prefill < 1 or any(b < 1 for b in sizes):
        raise ZayaEdgeError("--runs, --prompt, --prefill and batch sizes must be >= 1, --new-tokens >= 2")
    result = bench_artifact(artifact, threads=threads, prompt=prompt, new_tokens=new_tokens, prefill=prefill,
                            batches=sizes, runs=runs)
    click.echo(format_report(result))
    if json_path:
        with open(json_path, "w") as f:
            _json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
