"""`zaya-edge serve`: the OpenAI-compatible server (zaya_edge.app.serve; needs the [serve] extra)."""

from __future__ import annotations

import click

from zaya_edge.app.cli.common import Command
from zaya_edge.app.params import prefix_cache_option

from zaya_edge.errors import ZayaEdgeError


@click.command(cls=Command)
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Sequences decoded together (rows of the continuous batch).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Sequences that may wait for a row; beyond, requests get 429.")
@click.option("--api-key", envvar="ZAYA_EDGE_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1 (or set ZAYA_EDGE_API_KEY).")
@click.option("--model-name", default=None, help="The model id clients send.  [default: the artifact folder's name]")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores).")
@prefix_cache_option
def serve(artifact, host, port, max_batch, max_queue, api_key, model_name, threads, prefix_cache):
    """Serve the artifact folder ARTIFACT over an OpenAI-compatible HTTP API (/v1/chat/completions, ...)."""
    try:
        from zaya_edge.app.serve.server import serve as run
    except ImportError as exc:
        raise ZayaEdgeError(f"serving needs the [serve] extra (pip install 'zaya-edge[serve]'): {exc}") from None
    run(artifact, host=host, port=port, max_batch=max_batch, max_queue=max_queue, api_key=api_key,
        model_name=model_name, threads=threads, prefix_cache=prefix_cache)

