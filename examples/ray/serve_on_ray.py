"""`zaya-edge serve` replicated behind Ray Serve: the same OpenAI routes, one engine per replica.

    pip install 'zaya-edge[serve]' 'ray[serve]'          # on every node
    ZAYA_EDGE_ARTIFACT=/shared/zaya1 serve run --app-dir examples/ray serve_on_ray:app   # --address auto: a cluster

Ray Serve's proxy load-balances requests over the replicas; each replica builds the app exactly
as `zaya-edge serve` does (zaya_edge.app.serve.server.build: Engine + continuous-batching
scheduler), from an artifact at the same path on every node. Settings come from the environment
so the file needs no editing: ZAYA_EDGE_ARTIFACT, ZAYA_EDGE_REPLICAS (2), ZAYA_EDGE_THREADS
(threads per replica, 2), ZAYA_EDGE_MAX_BATCH (16), ZAYA_EDGE_API_KEY.
"""

from __future__ import annotations

import os

from ray import serve

THREADS = int(os.environ.get("ZAYA_EDGE_THREADS", "2"))


def build_app():
    """Runs on each replica when it starts: one Engine and one scheduler thread per replica."""
    from zaya_edge.app.serve.server import build

    app, _served = build(os.environ.get("ZAYA_EDGE_ARTIFACT", "zaya1"), threads=THREADS,
                         max_batch=int(os.environ.get("ZAYA_EDGE_MAX_BATCH", "16")),
                         api_key=os.environ.get("ZAYA_EDGE_API_KEY"))
    return app


@serve.deployment(num_replicas=int(os.environ.get("ZAYA_EDGE_REPLICAS", "2")),
                  ray_actor_options={"num_cpus": THREADS})
@serve.ingress(build_app)
class ZayaEdge:
    """The replica: all routes are the built app's."""


app = ZayaEdge.bind()
