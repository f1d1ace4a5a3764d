"""`zaya-edge quality | inspect | bench`: what an artifact is, how well and how fast it runs."""

from __future__ import annotations

import dataclasses

import click

from zaya_edge.app.bench import WORKLOAD
from zaya_edge.app.cli.common import Command
from zaya_edge.app.files import check_output, read_text_file, write_json_atomic
from zaya_edge.app.inspect import DEFAULT_CONTEXT
from zaya_edge.app.params import Seed
from zaya_edge.app.quality import DEFAULT_LENGTH
from zaya_edge.errors import ZayaEdgeError


@click.command(cls=Command)
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--reference", required=True, type=click.Path(path_type=str),
              help="An fp32 artifact or a Hugging Face checkpoint folder to compare against.")
@click.option("--tokens", "tokens_file", type=click.Path(path_type=str), default=None,
              help="Token ids: a .npy file or integers separated by whitespace or commas.")
@click.option("--text", default=None, help="Text to compare on (needs a tokenizer.json in ARTIFACT or REF).")
@click.option("--text-file", type=click.Path(path_type=str), default=None, help="Read --text from this file.")
@click.option("--length", type=int, default=DEFAULT_LENGTH, show_default=True, help="Random tokens when no tokens or text are given.")
@click.option("--seed", type=Seed(), default=0, show_default=True, help="Seed of the random tokens.")
@click.option("--json", "json_path", type=click.Path(path_type=str), default=None,
              help="Also write the report here (nothing is written without it).")
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
def quality(artifact, reference, tokens_file, text, text_file, length, seed, json_path, force, threads):
    """Teacher-forced comparison of ARTIFACT with a reference: top-1, KL, logit diff, perplexity."""
    from zaya_edge.app import quality as Q

    if text_file is not None:
        if text is not None:
            raise ZayaEdgeError("give --text or --text-file, not both")
        text = read_text_file(text_file, "--text-file")
    if json_path:
        check_output(json_path, "--force" if not force else None)
    report = Q.quality(artifact, reference, tokens_file=tokens_file, text=text, length=length, seed=seed,
                       threads=threads)
    click.echo(report.table())
    if json_path:
        write_json_atomic(json_path, dataclasses.asdict(report))
        click.echo(f"wrote {json_path}")


@click.command(cls=Command)
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--context", type=click.IntRange(min=1), default=None,
              help=f"Context length for the memory estimate.  [default: {DEFAULT_CONTEXT}, or the artifact's if shorter]")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size for the memory estimate.")
@click.option("--load", "load_session", is_flag=True, help="Also create a session (checks the graph; shows which router kernel runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(artifact, context, batch, load_session, as_json):
    """Show an artifact's manifest, sizes, ops, IO and estimated memory."""
    import json as _json

    from zaya_edge.app.inspect import inspect_artifact

    report = inspect_artifact(artifact, context=context, batch=batch, load_session=load_session)
    if context is not None and context > report["context_length"]:
        click.echo(f"warning: --context {context} exceeds the artifact's context length {report['context_length']}; "
                   f"the memory estimate is for a context it cannot run", err=True)
    click.echo(_json.dumps(report, indent=2) if as_json else report["text"])


@click.command(cls=Command)
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@click.option("--prompt", type=int, default=WORKLOAD["prompt"], show_default=True, help="Prompt tokens before the decode runs.")
@click.option("--new-tokens", type=int, default=WORKLOAD["new_tokens"], show_default=True, help="Tokens decoded per sequence.")
@click.option("--prefill", type=int, default=WORKLOAD["prefill"], show_default=True, help="Prompt tokens of the prefill run.")
@click.option("--batches", default=",".join(map(str, WORKLOAD["batches"])), show_default=True, help="Batch sizes for aggregate decode (comma-separated).")
@click.option("--runs", type=int, default=WORKLOAD["runs"], show_default=True, help="Repetitions; medians are reported.")
@click.option("--json", "json_path", type=click.Path(path_type=str), default=None, help="Also write the results as JSON.")
def bench(artifact, threads, prompt, new_tokens, prefill, batches, runs, json_path):
    """Measure decode, prefill and batched throughput of ARTIFACT (medians of interleaved runs)."""
    from zaya_edge.app.bench import bench_artifact, format_report

    try:
        sizes = tuple(int(b) for b in batches.split(",") if b.strip())
    except ValueError:
        raise ZayaEdgeError(f"--batches must be comma-separated integers, got {batches!r}") from None
    if runs < 1 or prompt < 1 or new_tokens < 2 or prefill < 1 or any(b < 1 for b in sizes):
        raise ZayaEdgeError("--runs, --prompt, --prefill and batch sizes must be >= 1, --new-tokens >= 2")
    if json_path:
        check_output(json_path)
    result = bench_artifact(artifact, threads=threads, prompt=prompt, new_tokens=new_tokens, prefill=prefill,
                            batches=sizes, runs=runs)
    click.echo(format_report(result))
    if json_path:
        write_json_atomic(json_path, result)
