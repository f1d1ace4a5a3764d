"""What every `zaya-edge` command shares: --debug and --version after the subcommand too, an
OSError as one line, and library argument names turned into the flags a person typed."""

from __future__ import annotations

import re

import click

from zaya_edge import __version__
from zaya_edge.errors import ZayaEdgeError

DEBUG_HELP = "Show tracebacks instead of one-line errors."


def _show_version(ctx, param, value):
    if value and not ctx.resilient_parsing:
        click.echo(f"zaya-edge {__version__}")
        ctx.exit()


def _debug(ctx, param, value):
    if value:
        ctx.meta["debug"] = True  # meta is shared with the group, whose error handler reads it


_VERSION = dict(is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
                help="Show the version and exit.")
version_option = click.option("--version", **_VERSION)  # for the group: `zaya-edge --version`


class Command(click.Command):
    """A subcommand with --debug and --version, whose OSErrors (a file it could not read or write)
    become one-line errors; the group prints them (and re-raises them under --debug)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params += [click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True, callback=_debug,
                                     help=DEBUG_HELP),
                        click.Option(["--version"], **_VERSION)]

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OSError as exc:
            raise ZayaEdgeError(os_error_line(exc)) from exc


def os_error_line(exc: OSError) -> str:
    """`cannot use PATH: reason`, in the words of the OS (no errno numbers, no repr)."""
    reason = exc.strerror or str(exc)
    return f"cannot use {exc.filename}: {reason}" if exc.filename else reason


def as_flags(message: str, command: click.Command) -> str:
    """The library names its arguments (`block_size=64`, `force=True`, `max_new_tokens`); a person typed flags."""
    for option in command.params:
        if isinstance(option, click.Option) and option.name:
            flag = option.opts[-1]
            message = re.sub(rf"\b{option.name}=True\b", flag, message)
            message = re.sub(rf"\b{option.name}=", f"{flag} ", message)
            if "_" in option.name:  # a plain word (seed, chat) may mean something else in a sentence
                message = re.sub(rf"(?<![-\w]){option.name}\b", flag, message)
    return message
