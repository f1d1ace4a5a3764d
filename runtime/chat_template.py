"""A chat template is code that comes with the artifact: it runs in a jinja2 sandbox bounded in time
and size, and every way it can fail is one error line.

    ChatTemplate(source, limit, why)   compiled once (ArtifactError when it cannot be)
      └─ render(**values) -> str       within TEMPLATE_SECONDS and `limit` characters (ContextFullError
                                       past it, `why` ending its sentence: "exceeds the context length ...")

The sandbox (ImmutableSandboxedEnvironment) already refuses unsafe attributes and mutation. On top:
  - time: a deadline checked by every hook — calls, attributes, items, operators, filters — and on
    every item of every `for` loop (the compiled template's loops iterate through a ticking filter);
  - size: what a template builds (`*`, `**`, `%`, `+`, `~`, filters, method calls) and what it renders
    is held to `limit` characters; an operation whose result size can be told from its operands
    (repeats, widths, replacements, joins) is refused before it runs, the others just after. Past
    the limit the prompt cannot fit, whoever made it so: ContextFullError (a chat keeps going);
  - depth: a recursive macro ends as one error line, not a RecursionError traceback.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
import types

from jinja2 import Environment, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from zaya_edge.errors import ArtifactError, ContextFullError, RequestError, ZayaEdgeError, first_line

TEMPLATE_SECONDS = 2.0
MAX_TEMPLATE_CHARS = 1 << 20  # a chat template is a few KiB of source
MAX_INT_BITS = 1 << 16  # numbers a template may make: ~20 000 digits
MAX_ITEMS = 1 << 18  # objects counted in one value: a conversation has far fewer, a blow-up far more
_TICK, _CONCAT = "zaya_edge_tick", "zaya_edge_concat"  # the filters the bounded loops and `~` compile to
_DIGITS = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d*))?")  # printf widths and precisions
_BRACE_SPEC = re.compile(r"\{[^{}:]*:([^{}]*)\}")  # str.format specs
_NESTED_SPEC = re.compile(r"\{[^{}]*\{[^{}]*\}[^{}]*\}")  # a width taken from an argument
# the calls whose integer arguments are widths or counts of what they build
_WIDTHS = frozenset({"center", "ljust", "rjust", "zfill", "indent", "wordwrap", "truncate", "expandtabs", "batch",
                     "slice", "to_bytes"})


class ChatTemplate:
    """A compiled chat template; `render` gives its text or one ZayaEdgeError line."""

    def __init__(self, source: str, limit: int, why: str):
        if len(source) > MAX_TEMPLATE_CHARS:
            raise ArtifactError(f"the chat template is {len(source)} characters, more than {MAX_TEMPLATE_CHARS}")
        self.env, self.why = _BoundedSandbox(limit, why), why
        try:
            self.template = self.env.from_string(source)
        except RecursionError:
            raise ArtifactError("the chat template cannot be compiled: it nests too deeply") from None
        except Exception as exc:  # TemplateSyntaxError and whatever else a broken source raises
            raise ArtifactError(f"the chat template cannot be compiled: {first_line(exc)}") from None

    def render(self, **values) -> str:
        env = self.env
        size = _size(values, env.limit)
        if size > env.limit:
            raise ContextFullError(f"the chat messages hold more than {env.limit} characters: the prompt {self.why}; "
                                   "shorten them")
        try:
            return self._generate(values)
        except ZayaEdgeError:
            raise
        except RecursionError:
            raise ArtifactError("the chat template recursed too deeply") from None
        except Exception as exc:  # a template is code: any of its failures is one line
            raise ArtifactError(f"the chat template failed: {type(exc).__name__}: {first_line(exc)}") from None
        finally:
            env.budget.deadline = math.inf

    def _generate(self, values) -> str:
        env = self.env
        env.budget.deadline = time.monotonic() + TEMPLATE_SECONDS
        parts, size = [], 0
        pieces = self.template.generate(**values)
        try:
            for piece in pieces:
                size += len(piece)
                if size > env.limit:
                    raise ContextFullError(f"the rendered chat prompt is more than {env.limit} characters: it "
                                           f"{self.why}; shorten the messages")
                env.tick()
                parts.append(piece)
        finally:
            pieces.close()
        return "".join(parts)


def _raise_exception(message) -> None:
    """Hugging Face templates' way of refusing a conversation (roles out of order, ...)."""
    raise RequestError(f"the chat template refused the messages: {str(message)[:300]}".replace("\n", " "))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(value, limit: int) -> int:
    """Characters in `value` — strings and bytes by length, every other item one, containers through
    to their items — counted until it is more than `limit`, or more than MAX_ITEMS objects (so a
    shared-reference blow-up stops early): then a number over the limit."""
    total, stack = 0, [value]
    for _ in range(MAX_ITEMS):
        if not stack:
            return total
        v = stack.pop()
        total += len(v) if isinstance(v, (str, bytes, bytearray)) else 1
        if total > limit:
            return total
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack.extend(v)
    return total if not stack else limit + 1


def _expansion(name: str, values: list) -> int:
    """An upper bound of what a known expanding operation adds beyond its operands (0 for the others)."""
    text = values[0] if values and isinstance(values[0], (str, bytes)) else ""
    strs = [v for v in values[1:] if isinstance(v, (str, bytes))]
    ints = [v for v in values[1:] if _is_int(v)]
    if name == "replace" and len(strs) >= 2:
        return (text.count(strs[0]) if strs[0] else len(text) + 1) * len(strs[1])
    if name == "indent":
        return (text.count("\n") + 1) * (max(ints, default=4) + sum(map(len, strs)))
    if name == "wordwrap":
        return len(text) * (1 + max(1, sum(map(len, strs))))
    if name == "expandtabs":
        return text.count("\t") * max(ints, default=8)
    if name in ("format", "format_map"):
        widths = sum(int(d or 0) for m in _PERCENT_SPEC.finditer(text) for d in m.groups(""))
        widths += sum(int(d) for spec in _BRACE_SPEC.findall(text) for d in _DIGITS.findall(spec))
        return widths + (sum(ints) if "*" in text or _NESTED_SPEC.search(text) else 0)
    if name == "translate" and len(values) > 1 and isinstance(values[1], dict):
        return len(text) * max((_size(v, math.inf) for v in values[1].values()), default=0)
    if name == "join":
        longest = max((len(v) for v in values if isinstance(v, (str, list, tuple, dict))), default=0)
        return sum(len(v) for v in values if isinstance(v, str)) * longest
    return 0


class _Budget(threading.local):
    deadline = math.inf  # outside a render (compiling) nothing is timed


class _Bounds(NodeTransformer):
    """Every `for` iterates through the ticking filter; every `~` is the size-checked concat filter."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _TICK, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT, [], [], None, None,
                            lineno=node.lineno)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with a deadline and a size bound checked in each of its hooks."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, limit: int, why: str):
        super().__init__(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, optimized=False,
                         extensions=["jinja2.ext.loopcontrols"], finalize=self._finalize)
        self.limit, self.why, self.budget = limit, why, _Budget()
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs: no chat template needs it
        self.globals["raise_exception"] = _raise_exception
        self.filters = {name: self._bounded(name, f) for name, f in self.filters.items()}
        self.filters[_TICK], self.filters[_CONCAT] = self._ticking, self._concat

    def _parse(self, source, name, filename):
        tree = _Bounds().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree

    # -- the checks

    def tick(self) -> None:
        if time.monotonic() > self.budget.deadline:
            raise ArtifactError(f"the chat template took longer than {TEMPLATE_SECONDS:g} s to render")

    def _too_big(self, what: str) -> ContextFullError:
        """Past the size bound: whether the template or the messages made it so, the prompt cannot fit."""
        return ContextFullError(f"the chat template {what} more than {self.limit} characters (or {MAX_ITEMS} "
                                f"items), so the prompt {self.why}")

    def _checked(self, value):
        if _is_int(value) and value.bit_length() > MAX_INT_BITS:
            raise ArtifactError(f"the chat template made a number of more than {MAX_INT_BITS} bits")
        if _size(value, self.limit) > self.limit:
            raise self._too_big("built a value of")
        return value

    def _materialized(self, value):
        """A generator argument (map, select, ...) as a list, read no further than the size bound."""
        if not isinstance(value, types.GeneratorType):
            return value
        items, size = [], 0
        for item in value:
            self.tick()
            size += _size(item, self.limit)
            if size > self.limit:
                raise self._too_big("built a sequence of")
            items.append(item)
        return items

    def _check_call(self, name: str, args: tuple, kwargs: dict, receiver=None) -> tuple[tuple, dict]:
        """Refuse a call whose operands or known expansion pass the bounds; returns the arguments to use."""
        self.tick()
        args = tuple(self._materialized(a) for a in args)
        kwargs = {k: self._materialized(v) for k, v in kwargs.items()}
        given = (*args, *(v for k, v in kwargs.items() if not k.startswith("_")))  # not jinja's _loop_vars
        operands = [v for v in ((receiver,) if receiver is not None else ()) + given
                    if not isinstance(v, (Context, nodes.EvalContext, Environment))]
        if name in _WIDTHS and any(_is_int(v) and v > self.limit for v in operands):
            raise self._too_big("asked for a width or count of")
        if sum(_size(v, self.limit) for v in operands) + _expansion(name, operands) > self.limit:
            raise self._too_big(f"would build ({name or 'a call'}) a value of")
        return args, kwargs

    # -- the hooks

    def _bounded(self, name, func):
        @functools.wraps(func)  # keeps jinja's pass_context / pass_eval_context marks
        def bounded(*args, **kwargs):
            args, kwargs = self._check_call(name, args, kwargs)
            return self._checked(func(*args, **kwargs))

        return bounded

    def _ticking(self, iterable):
        for item in iterable:
            self.tick()
            yield item

    def _concat(self, items):
        self.tick()
        if _size(items, self.limit) > self.limit:
            raise self._too_big("joined text of")
        return "".join(map(str, items))

    def _finalize(self, value):
        if _size(value, self.limit) > self.limit:
            raise self._too_big("printed a value of")
        return value

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        receiver = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(receiver, types.ModuleType):
            receiver = None  # a builtin function, not a method
        args, kwargs = __self._check_call(name, args, kwargs, receiver)
        return __self._checked(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, operator, left, right):
        self.tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                repeated = isinstance(seq, (str, bytes, list, tuple)) and _is_int(n)
                if repeated and _size(seq, self.limit) * n > self.limit:
                    raise self._too_big("would repeat a value to")
            if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise ArtifactError(f"the chat template would make a number of more than {MAX_INT_BITS} bits")
        elif operator == "**" and _is_int(left) and _is_int(right) and abs(left) > 1 \
                and right * abs(left).bit_length() > MAX_INT_BITS:
            raise ArtifactError(f"the chat template would make a number of more than {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            self._check_call("format", right if isinstance(right, tuple) else (right,), {}, left)
        return self._checked(super().call_binop(context, operator, left, right))

    def getattr(self, obj, attribute):
        self.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        self.tick()
        return super().getitem(obj, argument)
