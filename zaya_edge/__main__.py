"""`python -m zaya_edge ...` is the `zaya-edge` command."""

from zaya_edge.app.cli import main

main()
