"""`zaya-edge export`: checkpoint -> artifact folder."""

from __future__ import annotations

import click

from zaya_edge.errors import ZayaEdgeError


@click.command()
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
