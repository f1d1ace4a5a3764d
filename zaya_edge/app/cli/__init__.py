"""The `zaya-edge` command: a thin layer over the library."""

from __future__ import annotations

import sys

import click

from zaya_edge.app.cli.common import DEBUG_HELP, version_option
from zaya_edge.errors import ZayaEdgeError


class _Group(click.Group):
    """Print ZayaEdgeError, and a bad option value, as one line (exit 2); --debug shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ZayaEdgeError, click.BadParameter) as exc:
            if ctx.meta.get("debug"):
                raise
            message = exc.format_message() if isinstance(exc, click.BadParameter) else str(exc)
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@version_option
@click.option("--debug", is_flag=True, help=DEBUG_HELP)
@click.pass_context
def main(ctx, debug):
    """Export ZAYA1 to ONNX and run it on laptops and edge devices."""
    ctx.meta["debug"] = debug


from . import artifact_tools, export, generate, rsa, serve  # noqa: E402  (the commands)

for command in (export.export, artifact_tools.quality, rsa.solve, generate.run, generate.chat,
                artifact_tools.inspect, rsa.eval_, artifact_tools.bench, serve.serve):
    main.add_command(command)

if __name__ == "__main__":
    main()
