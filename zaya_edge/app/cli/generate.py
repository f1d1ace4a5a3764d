"""`zaya-edge run | chat`: generate text from an artifact."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys

import click
from click.core import ParameterSource

from zaya_edge.app.budget import fit_budget, send_fitting
from zaya_edge.app.cli.common import Command, as_flags
from zaya_edge.app.params import Seed, prefix_cache_option
from zaya_edge.errors import ContextFullError, ZayaEdgeError

DEFAULT_MAX_NEW_TOKENS = 512
COMMANDS = ("/reset", "/stats", "/quit")
_COMMAND = re.compile(r"/[A-Za-z]+")  # `/foo` is a command; `/etc/hosts is what?` is a message


def sampling_options(fn):
    """The sampling flags `run` and `chat` share."""
    opts = [
        click.option("--temperature", type=float, default=0.7, show_default=True, help="0 = greedy."),
        click.option("--top-k", type=int, default=0, show_default=True, help="0 = off."),
        click.option("--top-p", type=float, default=0.95, show_default=True),
        click.option("--min-p", type=float, default=0.0, show_default=True),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True),
        click.option("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, show_default=True,
                     help="Most tokens per reply; the default is lowered to what fits the context."),
        click.option("--seed", type=Seed(), default=None, help="Same seed, same tokens."),
        click.option("--stop", "stop_strings", multiple=True, help="Stop when this text appears (repeatable)."),
        click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _params(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, stop_strings):
    from zaya_edge.runtime import SamplingParams

    try:
        return SamplingParams(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed,
            stop_strings=tuple(stop_strings),
        )
    except ZayaEdgeError as exc:
        raise type(exc)(as_flags(str(exc), click.get_current_context().command)) from exc


def _given(name: str) -> bool:
    """Whether the person typed this flag (a default may be adjusted, a given value not)."""
    return click.get_current_context().get_parameter_source(name) not in (ParameterSource.DEFAULT,
                                                                          ParameterSource.DEFAULT_MAP)


def _notice(text: str) -> None:
    click.echo(text, err=True)


def _stream(generation) -> None:
    """Echo text deltas as they come; Ctrl-C stops this reply, not the program."""
    try:
        for text in generation:
            click.echo(text, nl=False)
    except KeyboardInterrupt:
        generation.cancel()
    finally:
        click.echo()


def _print_stats(stats) -> None:
    s = stats
    reused = f" ({s.prefix_tokens_reused} from the prefix cache)" if s.prefix_tokens_reused else ""
    click.echo(
        f"[load {s.load_seconds:.2f} s | prompt {s.prompt_tokens} tok{reused}, {s.prefill_tokens_per_s:.1f} tok/s | "
        f"first token {s.time_to_first_token_s * 1000:.0f} ms | {s.generated_tokens} tok, {s.decode_tokens_per_s:.1f} tok/s | "
        f"cache {s.cache_bytes / 2**20:.1f} MiB | peak RSS {s.peak_rss_bytes / 2**30:.2f} GiB]",
        err=True,
    )


@click.command(cls=Command)
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

    params = _params(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, stop_strings)
    engine = Engine.load(artifact, threads=threads, verify=verify)
    ids = engine.encode_prompt(prompt, chat=chat)
    budget = fit_budget(len(ids), engine.context_length, max_new_tokens, _given("max_new_tokens"), _notice)
    generation = engine.generate(ids, dataclasses.replace(params, max_new_tokens=budget))
    _stream(generation)
    if show_stats:
        _print_stats(generation.stats)


@click.command(cls=Command)
@click.argument("artifact", type=click.Path(path_type=str))
@sampling_options
@click.option("--system", default=None, help="A system message.")
@prefix_cache_option
def chat(artifact, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed,
         stop_strings, threads, system, prefix_cache):
    """Interactive multi-turn chat (keeps the cache between turns). /reset, /stats, /quit.

    A message that does not fit the context is not sent; the conversation is kept."""
    from zaya_edge.runtime import Engine

    params = _params(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, seed, stop_strings)
    engine = Engine.load(artifact, threads=threads, prefix_cache=prefix_cache)
    explicit = _given("max_new_tokens")
    if explicit and max_new_tokens >= engine.context_length:
        raise ContextFullError(f"--max-new-tokens {max_new_tokens} leaves no room for a message in the context "
                               f"({engine.context_length} tokens)")
    _ChatLoop(engine.chat(params, system=system), explicit).run()


class _ChatLoop:
    """Read a line (with line editing and history where readline exists), answer a command or send a turn."""

    def __init__(self, session, explicit: bool):
        self.session, self.explicit, self.last = session, explicit, None

    def run(self) -> None:
        if sys.stdin.isatty():
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (input() then edits lines and keeps a history)
        click.echo("zaya-edge chat: /reset starts over, /stats shows the last turn's figures, /quit ends.", err=True)
        while (line := self._read()) is not None and self._handle(line):
            pass

    def _read(self) -> str | None:
        try:
            return input(">>> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: end the line the terminal left open
            click.echo()
            return None

    def _handle(self, line: str) -> bool:
        """False when the chat ends."""
        text = line.strip()
        word = text.split(maxsplit=1)[0] if text else ""
        if word in ("/quit", "/exit"):
            if not sys.stdin.isatty():
                click.echo()  # no terminal echoed the newline
            return False
        if word == "/reset":
            self.session.reset()
            _notice("(conversation cleared)")
        elif word == "/stats" and self.last is None:
            _notice("(no turn yet: /stats shows the last turn's figures)")
        elif word == "/stats":
            _print_stats(self.last.stats)
        elif _COMMAND.fullmatch(word):
            _notice(f"unknown command {word}; commands: {' '.join(COMMANDS)}")
        elif text:
            self._turn(line)
        return True

    def _turn(self, line: str) -> None:
        try:
            generation = send_fitting(self.session, line, self.explicit, _notice)
        except ContextFullError:
            _notice(self._does_not_fit())
            return
        try:
            _stream(generation)
        except ZayaEdgeError as exc:  # the session drops the turn; the chat goes on
            _notice(f"error: {as_flags(str(exc), click.get_current_context().command)}")
            return
        self.last = generation

    def _does_not_fit(self) -> str:
        context = self.session.engine.context_length
        given = f" with --max-new-tokens {self.session.params.max_new_tokens}" if self.explicit else ""
        if not any(m["role"] != "system" for m in self.session.messages):
            return f"not sent: this message{given} does not fit the context ({context} tokens); shorten it"
        return (f"not sent: this message{given} does not fit the context ({context} tokens) after the conversation "
                f"so far, which is kept: /reset starts over")
