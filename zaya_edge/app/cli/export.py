"""`zaya-edge export`: checkpoint -> artifact folder."""

from __future__ import annotations

import click

from zaya_edge.app.cli.common import Command, as_flags
from zaya_edge.app.files import check_output_folder
from zaya_edge.errors import RequestError, ZayaEdgeError
from zaya_edge.export import options as choices


# --block-size, --lm-head and --quant-method have no click default: fp32 refuses them when given.
@click.command(cls=Command)
@click.argument("src", type=click.Path(path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(path_type=str), help="Artifact folder to create.")
@click.option("--precision", type=click.Choice(choices.PRECISIONS), default=choices.DEFAULT_PRECISION, show_default=True,
              help="Weight precision; int4/int8 quantize projections, experts and the embedding table.")
@click.option("--block-size", type=int, default=None,
              help=f"int4/int8: weights per quantization block, one of {', '.join(map(str, choices.BLOCK_SIZES))}."
                   f"  [default: {choices.DEFAULT_BLOCK_SIZE}]")
@click.option("--asymmetric", is_flag=True, default=None, help="int4/int8: a zero point per block (default: symmetric).")
@click.option("--lm-head", type=click.Choice(choices.TABLE_PRECISIONS), default=None,
              help="int4/int8: the tied embedding/lm_head table.  [default: the precision]")
@click.option("--quant-method", type=click.Choice(choices.METHODS), default=None,
              help=f"int4/int8: rtn (round to nearest) or mse (per-block scale search).  [default: {choices.DEFAULT_METHOD}]")
@click.option("--all-logits", is_flag=True, help="Output logits for every position (default: last only).")
@click.option("--context-length", type=int, default=None, help="Longest context the artifact supports (default: the model's).")
@click.option("--kv-cache", type=click.Choice(tuple(choices.KV_CACHES)), default=None,
              help="The key/value cache's dtype.  [default: fp16 for int4/int8, fp32 for fp32]")
@click.option("--portable", is_flag=True,
              help="int4: experts as the stock QMoE / MatMulNBits graph instead of ai.zaya::ExpertMoE nodes "
                   "(whose function body is that graph; the native kernel reads the stored blocks in place).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export(src, out, precision, block_size, asymmetric, lm_head, quant_method, all_logits, context_length, kv_cache,
           portable, force, quiet):
    """Export the ZAYA checkpoint folder SRC into an artifact folder."""
    check_output_folder(out)
    try:
        from zaya_edge.export import export_model
    except ImportError as exc:
        raise ZayaEdgeError(f"export needs the export extra: pip install 'zaya-edge[export]' ({exc})") from None
    try:
        path = export_model(
            src, out, precision=precision, block_size=block_size, asymmetric=bool(asymmetric), lm_head=lm_head,
            quant_method=quant_method, all_logits=all_logits, context_length=context_length, kv_cache=kv_cache,
            fused_moe=False if portable else None, force=force, progress=not quiet,
        )
    except RequestError as exc:
        raise type(exc)(as_flags(str(exc), export)) from exc
    click.echo(f"wrote {path}")
