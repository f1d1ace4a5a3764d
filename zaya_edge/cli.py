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


if __name__ == "__main__":
    main()
