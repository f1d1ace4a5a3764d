"""`zaya-edge run | chat`: generate text from an artifact."""

from __future__ import annotations

import click

from zaya_edge.errors import ZayaEdgeError


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


@click.command()
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


@click.command()
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
