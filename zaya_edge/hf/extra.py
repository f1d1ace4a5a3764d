"""The [hf] extra (torch, transformers) in one place, reached only when a method needs it.

zaya_edge must import, and the runtime run, where neither is installed; so nothing in this
package names them in an import statement. Each use asks `extra(module)` instead: the module on
first call, or one ImportError that names the extra when it is missing.
"""

from __future__ import annotations

import importlib

HINT = "zaya_edge.hf needs the [hf] extra (torch, transformers>=5.23)"


def extra(module: str):
    """`torch`, `transformers` or one of their submodules, imported on first use."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{HINT}: {exc}") from None
