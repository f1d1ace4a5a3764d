"""The app layer: the `zaya-edge` command and the tools behind it (eval, bench, quality, inspect).

The only layer that may import both `zaya_edge.export` and `zaya_edge.runtime`; nothing below
imports it. Library code raises `ZayaEdgeError`s that name its own arguments; this layer maps
them to flags, progress bars and report files.
"""
