"""Read JSON into typed dataclasses, checking every field against its annotation.

Why by hand: the runtime's dependency set stays onnxruntime + numpy + tokenizers (it is embedded
in apps and devices), and the manifest needs only the few shapes below — dataclasses, NamedTuples,
tuple/list/dict, unions with None, and the JSON scalars — about sixty lines, not a new library.
Every mistake is one `ArtifactError` naming the field's path, e.g. `files.model.onnx.bytes`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing

from zaya_edge.errors import ArtifactError, ZayaEdgeError, first_line

JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}


def json_kind(value) -> str:
    """How a parsed JSON value is named in a message: 'an object', 'a list', 'null', ..."""
    return JSON_NAMES.get(type(value), type(value).__name__)


def _fail(where: str, wanted: str, value) -> ArtifactError:
    return ArtifactError(f"{where}: expected {wanted}, got {json_kind(value)}")


def decode(tp, value, where: str):
    """`value` (parsed JSON) as an instance of the annotation `tp`, or ArtifactError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _decode_union(args, value, where)
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):  # NamedTuple
        hints = typing.get_type_hints(tp)
        return tp(*_decode_fixed(tuple(hints[f] for f in tp._fields), value, where))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))
        return tuple(_decode_fixed(args, value, where))
    if origin is list:
        return [decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(_list(value, where))]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        return {k: decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _decode_scalar(tp, value, where)


def _decode_union(args, value, where):
    if value is None and type(None) in args:
        return None
    errors = []
    for option in (a for a in args if a is not type(None)):
        try:
            return decode(option, value, where)
        except ArtifactError as exc:
            errors.append(exc)
    raise errors[0] if len(errors) == 1 else _fail(where, " or ".join(_describe(a) for a in args), value)


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    return JSON_NAMES.get(origin or tp, "an object" if dataclasses.is_dataclass(tp) else str(tp))


def _decode_dataclass(tp, value, where):
    if not isinstance(value, dict):
        raise _fail(where, "an object", value)
    fields = {f.name: f for f in dataclasses.fields(tp)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ArtifactError(f"{where}: unknown field {unknown[0]!r}")
    hints = typing.get_type_hints(tp)
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in value]
    if missing:
        raise ArtifactError(f"{where}: missing field {missing[0]!r}")
    return tp(**{n: decode(hints[n], v, f"{where}.{n}") for n, v in value.items()})


def _list(value, where) -> list:
    if not isinstance(value, list):
        raise _fail(where, "a list", value)
    return value


def _decode_fixed(types_, value, where) -> list:
    items = _list(value, where)
    if len(items) != len(types_):
        raise ArtifactError(f"{where}: expected {len(types_)} items, got {len(items)}")
    return [decode(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(types_, items))]


def _decode_scalar(tp, value, where):
    if tp is typing.Any:
        return value
    if tp is bool or tp is str or tp is type(None):
        if type(value) is not tp:
            raise _fail(where, JSON_NAMES[tp], value)
        return value
    if tp is int:
        if type(value) is not int:
            raise _fail(where, "an integer", value)
        return value
    if tp is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise _fail(where, "a finite number", value)
        return float(value)
    raise TypeError(f"{where}: no JSON reading for {tp!r}")  # a bug in an annotation, not input


def json_object(raw: bytes | str, what: str, error: type[ZayaEdgeError] = ArtifactError) -> dict:
    """`raw` parsed as a JSON object, or one `error` line naming `what` — the one reader behind
    every small JSON file (an artifact's configs, a tokenizer's, a checkpoint's, a safetensors
    header): bad UTF-8, bad JSON, deep nesting, a number past the digit limit, not an object."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{what} is not valid JSON: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise error(f"{what} is not a JSON object")
    return data
