"""Click parameter types and options the commands share: values parsed at the edge, not in the library."""

from __future__ import annotations

import re
from typing import Callable

import click

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?)B?\s*", re.IGNORECASE)


class MemorySize(click.ParamType):
    """'6GB' / '6GiB' / '512MB' / a byte count -> bytes (KB, MB, GB, TB decimal; KiB, MiB, GiB, TiB binary)."""

    name = "size"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        m = _SIZE.fullmatch(value)
        if not m:
            self.fail(f"cannot read memory size {value!r} (use e.g. 6GB, 512MiB or a byte count)", param, ctx)
        power = "KMGT".find(m.group(2).upper()) + 1 if m.group(2) else 0
        return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** power)


class LazyHelpOption(click.Option):
    """An option whose help ends with text computed when help is shown (`lazy_help`, e.g. a default).

    The text comes from the library's own constants, so it cannot drift from them, and the command
    modules need not import the runtime just to be listed.
    """

    def __init__(self, *args, lazy_help: str | Callable[[], str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_help = lazy_help

    def get_help_record(self, ctx):
        record = super().get_help_record(ctx)
        if record is None:  # hidden
            return None
        names, text = record
        more = self.lazy_help() if callable(self.lazy_help) else self.lazy_help
        return names, f"{text}  {more}".lstrip()


class Seed(click.types.IntParamType):
    """A --seed: checked by the runtime's one rule for seeds ([0, 2**64)) before anything loads."""

    def convert(self, value, param, ctx) -> int:
        from zaya_edge.errors import RequestError
        from zaya_edge.runtime.types import check_seed

        seed = super().convert(value, param, ctx)
        try:
            return check_seed(seed)
        except RequestError as exc:
            self.fail(str(exc), param, ctx)


def _prefix_cache_default() -> int:
    from zaya_edge.runtime.prefix_cache import DEFAULT_BYTES

    return DEFAULT_BYTES


def _prefix_cache_help() -> str:
    return f"[default: {_prefix_cache_default() // 2**20} MiB]"


def prefix_cache_option(fn):
    """--prefix-cache, for the commands whose engine sees several prompts (Engine.load's prefix_cache)."""
    return click.option("--prefix-cache", type=MemorySize(), default=_prefix_cache_default, cls=LazyHelpOption,
                        lazy_help=_prefix_cache_help, help="Memory for prefilled prompt prefixes reused by later "
                        "prompts (shared heads, repeated prompts, RSA rounds), e.g. 1GB; 0 = off.")(fn)


def prefix_cache_line(cache) -> str | None:
    """What the engine's prefix cache saved, for a command's closing line; None when it saved nothing."""
    s = cache.stats
    if not s.hits:
        return None
    return f"prefix cache: {s.reused_tokens} prompt tokens reused ({s.hits} hits, {cache.nbytes / 2**20:.1f} MiB held)"
