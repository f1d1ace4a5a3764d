"""What the model reads and what is read back out: aggregation templates, boxed answers, the vote.

Pure text functions: no engine, no settings, so apps (the tiny reasoner's trainer, eval) can build
the same prompts and score the same answers as a solve does.
"""

from __future__ import annotations

import collections
import importlib.resources
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from zaya_edge.errors import RequestError

if TYPE_CHECKING:
    from .records import Candidate

THINK_END = "</think>"
_PLACEHOLDER = re.compile(r"\{(problem|candidates)\}")


def default_template(subset: int) -> str:
    """The shipped template: aggregate.txt, or refine.txt when one tail is shown (C = 1)."""
    name = "refine.txt" if subset == 1 else "aggregate.txt"
    return importlib.resources.files("zaya_edge.runtime").joinpath("templates", name).read_text("utf-8").rstrip()


MAX_TEMPLATE_BYTES = 1 << 20  # an aggregation prompt's template is a few hundred bytes


def read_template(path: str | os.PathLike) -> str:
    """Read a user's aggregation template; it must contain {problem} and {candidates}."""
    path = Path(path)
    try:
        if not path.is_file():  # a device or FIFO would be read forever
            raise RequestError(f"cannot read template {path}: not a regular file")
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise RequestError(f"template {path} is larger than {MAX_TEMPLATE_BYTES} bytes")
        text = path.read_text("utf-8").rstrip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"cannot read template {path}: {exc}") from None
    check_template(text, str(path))
    return text


def check_template(text: str, where: str) -> None:
    """A template without both placeholders would silently drop the problem or the candidates."""
    missing = [p for p in ("{problem}", "{candidates}") if p not in text]
    if missing:
        raise RequestError(f"template {where} lacks the placeholder(s) {', '.join(missing)}")


def render_prompt(template: str, problem: str, carried: Sequence[str]) -> str:
    """Fill the template in one pass, so braces inside the problem or tails are never re-expanded."""
    blocks = "\n\n".join(f"---- Solution {i} ----\n{text}" for i, text in enumerate(carried, 1))
    values = {"problem": problem, "candidates": blocks}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def extract_boxed(text: str) -> str | None:
    r"""The content of the last \boxed{...} (nested braces balanced), or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j].strip()
        start = text.rfind("\\boxed{", 0, start)  # unbalanced (cut off): try an earlier one
    return None


def _vote_key(answer: str) -> str:
    return "".join(answer.split()).strip("$")


def majority_vote(candidates: Sequence[Candidate]) -> tuple[str | None, Candidate, dict[str, int]]:
    """Most common extracted answer; ties go to the answer more candidates *finished* with (EOS, not budget).

    Returns (answer, winning candidate, votes). The winner is the first finished candidate holding
    the answer (else the first holding it); with no answers at all, the first finished candidate.
    """
    groups: dict[str, list[Candidate]] = collections.defaultdict(list)
    for c in candidates:
        if c.answer is not None:
            groups[_vote_key(c.answer)].append(c)
    if not groups:
        return None, next((c for c in candidates if c.finished), candidates[0]), {}
    best = max(groups.values(), key=lambda g: (len(g), sum(c.finished for c in g), -g[0].index))
    winner = next((c for c in best if c.finished), best[0])
    votes = {g[0].answer: len(g) for g in sorted(groups.values(), key=len, reverse=True)}
    return winner.answer, winner, votes
