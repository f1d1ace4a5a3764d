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
