"""tiny-arith: the synthetic reasoning task the tiny demo model is trained on and evaluated with.

One module defines the problem text, the reasoning trace, the answer check and the train /
held-out split, so the training script (examples/tiny-reasoner) and `zaya-edge eval` can never
disagree on the format. Torch-free.

A problem adds two numbers of 1..4 digits. The trace restates the numbers, then works column by
column from the right. Each line gives the column sum (with the carry), the answer digits found
so far, and what is left of both numbers (0 once one runs out). Every step then reads only the
line before it — its last digits, its carry, its partial answer — never a digit counted from the
far end of the problem, which a tiny model learns slowly; and the final answer is a copy:

    What is 4837 + 2958?
    <think>
    4837 + 2958
    7+8=15, 5; 483 + 295
    3+5+1=9, 95; 48 + 29
    8+9=17, 795; 4 + 2
    4+2+1=7, 7795
    </think>
    The answer is \\boxed{7795}.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Iterator

MAX_DIGITS = 4
HELD_OUT_SEED = 20260508
HELD_OUT_SIZE = 500
# Generation settings the model is trained for. The longest solution is ~105 tokens, so BUDGET (β)
# never cuts one and a TAIL (τ) carries a whole candidate (full-chain RSA); C=4 tails plus the
# template and problem stay under ~700 tokens, inside the model's 1024 positions.
BUDGET = 160
TAIL = 112


@dataclasses.dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def text(self) -> str:
        return f"What is {self.a} + {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)


def is_held_out(p: Problem) -> bool:
    """A stable 1-in-8 hash split: held-out problems never appear in training, whatever the seed."""
    return hashlib.blake2b(f"{p.a}+{p.b}".encode(), digest_size=2).digest()[0] % 8 == 0


def sample_problem(rng: random.Random) -> Problem:
    """Operand lengths uniform in 1..MAX_DIGITS, then digits uniform (no leading zeros)."""
    def number() -> int:
        n = rng.randint(1, MAX_DIGITS)
        return rng.randint(10 ** (n - 1) if n > 1 else 0, 10**n - 1)

    return Problem(number(), number())


def problems(seed: int, held_out: bool) -> Iterator[Problem]:
    """Endless problems of one side of the split (duplicates possible on the training side)."""
    rng = random.Random(seed)
    while True:
        p = sample_problem(rng)
        if is_held_out(p) == held_out:
            yield p


def held_out_set(limit: int | None = None) -> list[Problem]:
    """The fixed evaluation set: the first HELD_OUT_SIZE distinct held-out problems of a fixed seed."""
    out, seen = [], set()
    for p in problems(HELD_OUT_SEED, held_out=True):
        if p not in seen:
            seen.add(p)
            out.append(p)
        if len(out) == HELD_OUT_SIZE:
            break
    return out[:limit] if limit is not None else out


def columns(p: Problem) -> list[tuple[int, int]]:
    """Digit pairs from the right, the shorter number padded with zeros."""
    a, b = str(p.a), str(p.b)
    n = max(len(a), len(b))
    a, b = a.zfill(n), b.zfill(n)
    return [(int(a[i]), int(b[i])) for i in range(n - 1, -1, -1)]


def trace_lines(p: Problem, slip: tuple[int, int] | None = None) -> tuple[list[str], str]:
    """The trace lines and the answer they reach; `slip=(column, delta)` adds delta to that
    column's sum and carries the mistake on consistently (a wrong candidate for aggregation)."""
    a, b = str(p.a), str(p.b)
    n = max(len(a), len(b))
    lines, digits, carry = [f"{a} + {b}"], "", 0
    for k, (x, y) in enumerate(columns(p)):
        total = x + y + carry
        if slip is not None and slip[0] == k:
            total = max(0, min(19, total + slip[1]))
        terms = f"{x}+{y}" + (f"+{carry}" if carry else "")
        last = k == n - 1
        digits = (str(total) if last else str(total % 10)) + digits
        carry = total // 10
        rest = "" if last else f"; {a[: max(0, len(a) - k - 1)] or '0'} + {b[: max(0, len(b) - k - 1)] or '0'}"
        lines.append(f"{terms}={total}, {digits}{rest}")
    return lines, digits


def solution(p: Problem, slip: tuple[int, int] | None = None) -> str:
    """What the model answers (it opens <think> itself; EOS follows)."""
    lines, answer = trace_lines(p, slip)
    return "<think>\n" + "\n".join(lines) + "\n</think>\nThe answer is \\boxed{" + answer + "}."


def wrong_solution(p: Problem, rng: random.Random) -> str:
    """A plausible wrong solution: one column's sum is off by 1..3, carried on; never correct."""
    n = len(columns(p))
    for _ in range(20):
        slip = (rng.randrange(n), rng.choice([-3, -2, -1, 1, 2, 3]))
        lines, answer = trace_lines(p, slip)
        if answer.lstrip("0") != p.answer.lstrip("0") and answer:
            return solution(p, slip)
    return solution(p).replace(p.answer + "}", str(int(p.answer) + 1) + "}")


def is_correct(answer: str | None, p: Problem) -> bool:
    """Compare an extracted \\boxed{} answer with the true sum (spaces, $ and leading zeros ignored)."""
    if answer is None:
        return False
    got = "".join(answer.split()).strip("$").lstrip("0") or "0"
    return got == p.answer


def parse_problem(text: str) -> Problem | None:
    """The Problem a text like 'What is 12 + 30?' asks, or None."""
    import re

    m = re.fullmatch(r"\s*What is (\d{1,9}) \+ (\d{1,9})\?\s*", text)
    return Problem(int(m.group(1)), int(m.group(2))) if m else None
