"""Helpers of the boundary tests: random damage to JSON values, and editing an artifact's manifest
so that a replaced file still passes the size check (its record rewritten)."""

from __future__ import annotations

import copy
import json

from zaya_edge import artifact as A

GARBAGE = [None, True, -1, 0, 2**70, 1.5, float("inf"), "", "x" * 50, [], {}, [1, "a"], {"a": 1}, "\ud800x"]


# JSON texts that a random mutation never makes: nesting past the parser's recursion, a number past
# Python's digit limit, a lone surrogate, the non-standard constants.
CRAFTED = ["[" * 100_000 + "]" * 100_000, '{"a": ' + "1" * 5000 + "}", '{"a": 1e999999}',
           '{"a": NaN, "b": -Infinity}', '"\\ud800"', '{"a": "\\udfff"}', "\ufeff{}", "{}" * 3, ""]


def mutate(value, rng):
    """One random change somewhere in a JSON value: a type swap, a deletion or garbage."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        if rng.random() < 0.2:
            del value[key]
        else:
            value[key] = mutate(value[key], rng)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        value[i] = mutate(value[i], rng)
        return value
    return copy.deepcopy(rng.choice(GARBAGE))  # a fresh one: a later change may edit it in place


def mutated(value, rng, changes: int = 1):
    """A deep copy of a JSON value with `changes` random changes."""
    value = json.loads(json.dumps(value))
    for _ in range(changes):
        value = mutate(value, rng)
    return value


def edit_manifest(folder, edit) -> None:
    """Apply `edit` to the parsed manifest (it may return a replacement) and write it back."""
    path = folder / A.MANIFEST_FILE
    data = json.loads(path.read_text())
    data = edit(data) or data
    path.write_text(json.dumps(data))


def rewrite_record(folder, name: str) -> None:
    """List `folder/name` in the manifest at its current size and hash (added if it was not listed)."""
    record = A.file_record(folder / name)
    edit_manifest(folder, lambda m: m["files"].update({name: {"bytes": record.bytes, "sha256": record.sha256}}))


def write_listed(folder, name: str, content: bytes | str) -> None:
    """Replace (or add) an artifact file and rewrite its manifest record, so only its content is wrong."""
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    rewrite_record(folder, name)
