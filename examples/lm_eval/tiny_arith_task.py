"""The problems of the lm-eval task: tiny_arith's held-out set, read from this checkout.

Imported by lm-eval (tiny_arith.yaml's custom_dataset), possibly from another interpreter than
the project's: only zaya_edge.app.tiny_arith is needed, and it is pure Python.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def held_out(**kwargs):
    """{"test": Dataset} of {"question", "answer"} rows, in the held-out set's fixed order."""
    import datasets

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from zaya_edge.app import tiny_arith

    rows = [{"question": p.text, "answer": p.answer} for p in tiny_arith.held_out_set()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
