"""Prompt templates: Jinja2 rendered in a sandbox whose time, output and value sizes are bounded.

This module owns how a tenant's prompt template is vetted, compiled and rendered. Jinja's own
``SandboxedEnvironment`` keeps templates away from Python internals but not from burning a worker's
CPU or memory (``{{ 'a' * 10**9 }}``, nested ``range`` loops, ``|center(10**9)``, recursive macros).
Here a template is first checked against static rules (no macros, includes, inheritance, recursive
loops or amplifying filters), then its syntax tree is instrumented so that every loop iteration,
every piece of output and every value the template builds is charged against a per-render budget
(:class:`TemplateLimits`); exceeding it raises :class:`RenderLimitExceeded`. Calls are limited to
an allow-list, anything else raises :class:`jinja2.exceptions.SecurityError`.

A normal template renders exactly as it would in
``SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)``.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    Set,
    ValuesView,
)
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final, TypeVar

import jinja2
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context, LoopContext, Undefined
from jinja2.sandbox import SandboxedEnvironment, safe_range
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

__all__ = [
    "BoundedTemplate",
    "RenderLimitExceeded",
    "TemplateLimits",
    "TemplateRejected",
    "check_template",
    "compile_template",
    "template_variables",
]

_T = TypeVar("_T")


class TemplateRejected(ValueError):
    """A template that may not be used; the message says why and, when known, on which line."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


class RenderLimitExceeded(jinja2.TemplateError):
    """Raised while rendering when a bound is hit; the message names the bound."""


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    max_seconds: float = 0.05
    """Wall-clock budget per render, checked cooperatively (between operations, not inside them)."""
    max_output_chars: int = 200_000
    """Rendered text; also all text written into ``{% set %}``/``{% filter %}`` blocks."""
    max_iterations: int = 100_000
    """Loop iterations per render, all loops together."""

    def __post_init__(self) -> None:
        if not self.max_seconds > 0:
            raise ValueError("max_seconds must be positive")
        if self.max_output_chars <= 0:
            raise ValueError("max_output_chars must be positive")
        if self.max_iterations <= 0:
            raise ValueError("max_iterations must be positive")


# Filters whose cost is linear in their input; the ones with amplifying arguments (join, replace,
# batch, tojson's indent, round's precision, sum's start) are guarded below.
_ALLOWED_FILTERS: Final = frozenset(
    {
        "abs", "batch", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first",
        "float", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
        "reject", "rejectattr", "replace", "reverse", "round", "select", "selectattr", "slice",
        "sort", "string", "striptags", "sum", "title", "tojson", "trim", "truncate", "unique",
        "upper", "urlencode", "wordcount",
    }
)  # fmt: skip
# These turn their input into text, so their input is sized first: str() of a shared structure
# such as [[x, x], [x, x]] nested twenty deep is exponential in the template's length.
_STRINGIFYING_FILTERS: Final = frozenset(
    {
        "capitalize", "e", "escape", "lower", "string", "striptags", "title", "trim", "truncate",
        "upper", "urlencode", "wordcount",
    }
)  # fmt: skip
# These run a test on every item, and a test such as `in` can be linear in its argument; their
# input is paced so that the deadline is checked per item, not only per item they keep.
_TESTING_FILTERS: Final = frozenset({"reject", "rejectattr", "select", "selectattr"})
# These return (part of) an existing value; sizing their result again would only cost time.
_SELECTING_FILTERS: Final = frozenset({"count", "d", "default", "first", "last", "length", "max", "min"})
_REFUSED_GLOBALS: Final = frozenset({"lipsum", "cycler", "joiner"})
_CALLABLE_GLOBALS: Final[tuple[object, ...]] = (safe_range, dict, Namespace)
_STR_METHODS: Final = frozenset(
    {"lower", "upper", "strip", "lstrip", "rstrip", "split", "startswith", "endswith", "title",
     "capitalize", "replace"}
)  # fmt: skip
_DICT_METHODS: Final = frozenset({"get", "items", "keys", "values"})
_LOOP_METHODS: Final = frozenset({"cycle", "changed"})
_REFUSED_NODES: Final[Mapping[type[nodes.Node], str]] = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call block",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from-import",
    nodes.Extends: "extends",
    nodes.Block: "block",
    nodes.EvalContextModifier: "autoescape block",
    nodes.ScopedEvalContextModifier: "autoescape block",
}
# Integers stay far below Python's 4300-digit str() limit and multiply in microseconds.
_MAX_INT_BITS: Final = 4096
_MAX_FORMAT_WIDTH_DIGITS: Final = 9

# Names the instrumented tree uses to reach the per-render budget; check_template keeps templates
# from using them, so a template can neither read nor shadow them.
_RESERVED: Final = "__lockgate_"
_BUDGET: Final = _RESERVED + "budget"
_LOOP: Final = _RESERVED + "loop"
_EMIT: Final = _RESERVED + "emit"
_CONCAT: Final = _RESERVED + "concat"
_ADMIT: Final = _RESERVED + "admit"


def _weigh(value: object, room: int, indent: int = 0, tick: Callable[[], None] | None = None) -> int:
    """The logical size of ``value`` (characters of text plus one per item), or something above
    ``room`` as soon as it passes it. ``tick`` is called every 1024 items, so a walk over a large
    value still honours the render's deadline.

    It walks the value as a tree, so an object referenced twice counts twice: that is what str(),
    tojson and == cost. ``indent`` adds depth * indent per item, the shape of indented JSON.
    """
    total = 0
    visited = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack and total <= room:
        item, depth = stack.pop()
        total += 1 + depth * indent
        children: Iterable[object]
        if isinstance(item, str | bytes | bytearray):
            total += len(item)
            continue
        if isinstance(item, int):
            total += item.bit_length() // 4
            continue
        if isinstance(item, range):
            try:
                total += len(item)
            except OverflowError:
                return room + 1
            continue
        if isinstance(item, Namespace):
            attrs: dict[str, object] = object.__getattribute__(item, "_Namespace__attrs")
            children = attrs.values()
        elif isinstance(item, Mapping):
            children = chain.from_iterable(item.items())
        elif isinstance(item, Sequence | Set | KeysView | ValuesView | ItemsView):
            children = item
        else:
            continue
        # Plain scalars are the bulk of most values; sizing them here instead of pushing them on
        # the stack keeps a walk over a long list fast.
        cost = 1 + (depth + 1) * indent
        for child in children:
            visited += 1
            if tick is not None and not visited & 1023:
                tick()
            if isinstance(child, str):
                total += cost + len(child)
            elif isinstance(child, int):
                total += cost + child.bit_length() // 4
            elif child is None or isinstance(child, float):
                total += cost
            else:
                stack.append((child, depth + 1))
            if total > room:
                return total
    return total


class _Budget:
    """What one render may still spend. Created per render and reached only through the render's
    own context, so concurrent renders (threads, asyncio tasks) never share one."""

    __slots__ = (
        "_deadline",
        "_iterations",
        "_limits",
        "_max_value",
        "_measured",
        "_variables",
        "_written",
    )

    def __init__(self, limits: TemplateLimits, variables: Mapping[str, Any]) -> None:
        self._limits = limits
        self._variables = variables
        self._deadline = time.perf_counter() + limits.max_seconds
        self._iterations = 0
        self._written = 0
        # Values may be as large as the output bound; only when one is larger are the variables
        # measured (once), so that e.g. sorting a large document list is not refused.
        self._max_value = limits.max_output_chars
        self._measured = False

    def names(self) -> dict[str, object]:
        return {
            _BUDGET: self,
            _LOOP: self.loop,
            _EMIT: self.emit,
            _CONCAT: self.concat,
            _ADMIT: self.admit,
        }

    def check_time(self) -> None:
        if time.perf_counter() > self._deadline:
            raise RenderLimitExceeded(f"rendering exceeded max_seconds ({self._limits.max_seconds}s)")

    def count_iteration(self) -> None:
        self._iterations += 1
        if self._iterations > self._limits.max_iterations:
            raise RenderLimitExceeded(f"loops exceeded max_iterations ({self._limits.max_iterations})")
        self.check_time()

    def check_size(self, size: int) -> None:
        if size > self._max_value and (self._measured or size > self._measure()):
            raise RenderLimitExceeded(
                f"a value built while rendering would exceed {self._max_value} characters"
                " (max_output_chars plus the size of the variables)"
            )

    def check_bits(self, bits: int) -> None:
        if bits > _MAX_INT_BITS:
            raise RenderLimitExceeded(
                f"an integer would exceed the integer size limit ({_MAX_INT_BITS} bits)"
            )

    def weigh(self, value: object, indent: int = 0) -> int:
        size = _weigh(value, self._max_value, indent, self.check_time)
        if size > self._max_value and not self._measured:
            size = _weigh(value, self._measure(), indent, self.check_time)
        return size

    def admit(self, value: _T) -> _T:
        """``value`` unchanged, once it is known to be within the value bound."""
        self.check_size(self.weigh(value))
        return value

    def settle(self, result: object) -> object:
        """A filter's result: sized now, or item by item as it is consumed if it is lazy."""
        if isinstance(result, Iterator):
            return self.stream(result)
        return self.admit(result)

    def stream(self, items: Iterator[_T]) -> Iterator[_T]:
        total = 0
        for item in items:
            self.check_time()
            total += self.weigh(item)
            self.check_size(total)
            yield item

    def pace(self, iterable: Iterable[_T]) -> Iterator[_T]:
        for item in iterable:
            self.check_time()
            yield item

    def loop(self, iterable: Any) -> _Counted:
        return _Counted(iterable, self)

    def concat(self, *parts: Any) -> str:
        """What ``a ~ b`` evaluates to, sized before the text is joined."""
        self.check_time()
        pieces: list[str] = []
        size = 0
        for part in parts:
            if not isinstance(part, str):
                self.admit(part)
            piece = str(part)
            size += len(piece)
            self.check_size(size)
            pieces.append(piece)
        return "".join(pieces)

    def emit(self, *parts: Any) -> str:
        """The text of one output node, charged against max_output_chars before it is written."""
        self.check_time()
        pieces: list[str] = []
        for part in parts:
            if not isinstance(part, str):
                self.admit(part)
            piece = str(part)
            self._written += len(piece)
            if self._written > self._limits.max_output_chars:
                raise RenderLimitExceeded(
                    f"rendered text exceeded max_output_chars ({self._limits.max_output_chars})"
                )
            pieces.append(piece)
        return "".join(pieces)

    def _measure(self) -> int:
        self._measured = True
        self._max_value = self._limits.max_output_chars + _weigh(
            self._variables, sys.maxsize, 0, self.check_time
        )
        return self._max_value


class _Counted:
    """A loop's iterable, charging each iteration; it keeps ``len()`` so ``loop.length`` does not
    have to consume the iterable first."""

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Any, budget: _Budget) -> None:
        self._items = items
        self._budget = budget

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            self._budget.count_iteration()
            yield item


def _budget_of(context: Context) -> _Budget:
    budget = context.parent.get(_BUDGET)
    if isinstance(budget, _Budget):
        return budget
    raise SecurityError("prompt templates render only through BoundedTemplate.render")


# --- filters ---------------------------------------------------------------------------------


def _with_context(func: Callable[..., Any]) -> Callable[..., Any]:
    """One of Jinja's filters as a function of (context, value, ...), passing it what Jinja would."""
    wants = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    if wants == "context":
        return func
    if wants == "eval_context":
        return lambda context, *args, **kwargs: func(context.eval_ctx, *args, **kwargs)
    if wants == "environment":
        return lambda context, *args, **kwargs: func(context.environment, *args, **kwargs)
    return lambda _context, *args, **kwargs: func(*args, **kwargs)


_JINJA_FILTERS: Final[Mapping[str, Callable[..., Any]]] = {
    name: _with_context(FILTERS[name]) for name in _ALLOWED_FILTERS
}


def _bounded_filter(name: str) -> Callable[..., Any]:
    func = _JINJA_FILTERS[name]
    stringifies = name in _STRINGIFYING_FILTERS
    tests = name in _TESTING_FILTERS
    selects = name in _SELECTING_FILTERS

    # pass_context also keeps Jinja from running the filter at compile time on constant arguments,
    # where no budget exists yet.
    @pass_context
    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget_of(context)
        budget.check_time()
        if stringifies:
            budget.admit(value)
        elif tests:
            value = budget.pace(value)
        result = func(context, value, *args, **kwargs)
        return result if selects else budget.settle(result)

    bounded.__name__ = bounded.__qualname__ = f"bounded_{name}"
    return bounded


@pass_context
def _join(context: Context, value: Any, d: Any = "", attribute: Any = None) -> str:
    budget = _budget_of(context)
    budget.check_time()
    if attribute is not None:
        value = map(make_attrgetter(context.environment, attribute), value)
    items = budget.admit(list(value))
    parts = [str(item) for item in items]
    separator = str(d)
    budget.check_size(sum(map(len, parts)) + len(separator) * max(len(parts) - 1, 0))
    return separator.join(parts)


@pass_context
def _replace(context: Context, s: Any, old: Any, new: Any, count: Any = None) -> Any:
    budget = _budget_of(context)
    budget.check_time()
    _check_replace(budget, budget.admit(s), old, new, count)
    return budget.settle(_JINJA_FILTERS["replace"](context, s, old, new, count))


def _check_replace(budget: _Budget, s: Any, old: Any, new: Any, count: Any = -1) -> None:
    text, old_text, new_text = str(s), str(old), str(new)
    hits = text.count(old_text)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    budget.check_size(len(text) + hits * (len(new_text) - len(old_text)))


@pass_context
def _tojson(context: Context, value: Any, indent: Any = None) -> Any:
    budget = _budget_of(context)
    budget.check_time()
    budget.admit(value)
    # Indented JSON repeats the indent on every line, once per level of depth.
    width = indent if isinstance(indent, int) else len(str(indent or ""))
    if width > 0:
        budget.check_size(budget.weigh(value, width))
    return budget.settle(_JINJA_FILTERS["tojson"](context, value, indent))


@pass_context
def _sum(context: Context, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    budget = _budget_of(context)
    budget.check_time()
    # sum() of lists or tuples copies the running total at every step: quadratic.
    if not isinstance(start, int | float):
        raise SecurityError("sum() may only add numbers in prompt templates")
    result = _JINJA_FILTERS["sum"](context, iterable, attribute, start)
    if isinstance(result, int):
        budget.check_bits(result.bit_length())
    return result


@pass_context
def _round(context: Context, value: Any, precision: Any = 0, method: Any = "common") -> Any:
    budget = _budget_of(context)
    budget.check_time()
    # 'ceil' and 'floor' compute 10**precision.
    if isinstance(precision, int):
        budget.check_bits(abs(precision) * 4)
    return _JINJA_FILTERS["round"](context, value, precision, method)


@pass_context
def _batch(context: Context, value: Any, linecount: Any, fill_with: Any = None) -> Any:
    budget = _budget_of(context)
    budget.check_time()
    # The last batch is padded to linecount with fill_with before anything else sees it.
    if fill_with is not None and isinstance(linecount, int):
        budget.check_size(max(linecount, 0) * budget.weigh(fill_with))
    return budget.settle(_JINJA_FILTERS["batch"](context, value, linecount, fill_with))


_GUARDED_FILTERS: Final[Mapping[str, Callable[..., Any]]] = {
    "join": _join,
    "replace": _replace,
    "tojson": _tojson,
    "sum": _sum,
    "round": _round,
    "batch": _batch,
}


# --- operators -------------------------------------------------------------------------------


def _check_add(budget: _Budget, left: Any, right: Any) -> None:
    if isinstance(left, str) and isinstance(right, str):
        budget.check_size(len(left) + len(right))
    elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
        budget.check_size(budget.weigh(left) + budget.weigh(right))
    elif isinstance(left, int) and isinstance(right, int):
        budget.check_bits(max(left.bit_length(), right.bit_length()) + 1)


def _check_multiply(budget: _Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        budget.check_bits(left.bit_length() + right.bit_length())
        return
    if isinstance(left, int):
        left, right = right, left
    if not isinstance(right, int):
        return
    if isinstance(left, str):
        budget.check_size(len(left) * right)
    elif isinstance(left, list | tuple):
        # Every item weighs at least one, so repeating even [''] is charged per item.
        budget.check_size((budget.weigh(left) - 1) * right)


def _check_power(budget: _Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        budget.check_bits(left.bit_length() * right)


def _check_format(budget: _Budget, left: Any, right: Any) -> None:
    if isinstance(left, str):
        budget.check_size(len(left) + _format_widths(left))
        budget.admit(right)


def _format_widths(template: str) -> int:
    """The sum of the widths and precisions in a printf-style format, which pad the result.

    It scans the way CPython's ``str % args`` does, nested parentheses in mapping keys included.
    """
    total = 0
    end = len(template)
    position = template.find("%")
    while position != -1:
        position += 1
        if position < end and template[position] == "(":
            depth = 0
            while position < end:
                depth += {"(": 1, ")": -1}.get(template[position], 0)
                position += 1
                if depth == 0:
                    break
        while position < end and template[position] in "#0- +":
            position += 1
        for part in ("width", "precision"):
            if part == "precision":
                if position >= end or template[position] != ".":
                    break
                position += 1
            if position < end and template[position] == "*":
                raise SecurityError(f"a '*' {part} in %-formatting is not allowed in prompt templates")
            digits = position
            while position < end and template[position] in "0123456789":
                position += 1
            if position - digits > _MAX_FORMAT_WIDTH_DIGITS:
                return sys.maxsize
            if position > digits:
                total += int(template[digits:position])
        position = template.find("%", position + 1)
    return total


# --- the environment -------------------------------------------------------------------------


def _describe(obj: object) -> str:
    name = getattr(obj, "__name__", None)
    if not isinstance(name, str):
        return f"an object of type {type(obj).__name__!r}"
    owner = getattr(obj, "__self__", None)
    if owner is None or isinstance(owner, types.ModuleType):
        return repr(name)
    return repr(f"{type(owner).__name__}.{name}")


class _BoundedEnvironment(SandboxedEnvironment):
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        for name in _REFUSED_GLOBALS:
            del self.globals[name]
        self.filters = {
            name: _GUARDED_FILTERS.get(name) or _bounded_filter(name) for name in sorted(_ALLOWED_FILTERS)
        }

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget_of(context)
        budget.check_time()
        if operator == "+":
            _check_add(budget, left, right)
        elif operator == "*":
            _check_multiply(budget, left, right)
        elif operator == "**":
            _check_power(budget, left, right)
        elif operator == "%":
            _check_format(budget, left, right)
        result = self.binop_table[operator](left, right)
        if isinstance(result, str):
            budget.admit(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget_of(context)
        if getattr(obj, "__self__", None) is budget:
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            return obj(*args, **kwargs)
        budget.check_time()
        if isinstance(obj, Undefined):
            # Calling a missing variable fails the way Jinja reports it: UndefinedError.
            return obj()
        if any(obj is allowed for allowed in _CALLABLE_GLOBALS):
            return budget.admit(context.call(obj, *args, **kwargs))
        if isinstance(obj, types.BuiltinMethodType):
            owner = obj.__self__
            if isinstance(owner, str) and obj.__name__ in _STR_METHODS:
                if obj.__name__ == "replace":
                    _check_replace(budget, owner, *args, **kwargs)
                return budget.admit(context.call(obj, *args, **kwargs))
            if isinstance(owner, dict) and obj.__name__ in _DICT_METHODS:
                return context.call(obj, *args, **kwargs)
        if (
            isinstance(obj, types.MethodType)
            and isinstance(obj.__self__, LoopContext)
            and obj.__name__ in _LOOP_METHODS
        ):
            return context.call(obj, *args, **kwargs)
        raise SecurityError(f"{_describe(obj)} may not be called in prompt templates")


# Safe to share: it is not changed after this line, and Jinja environments render concurrently.
_ENV: Final = _BoundedEnvironment()


# --- static rules and instrumentation ---------------------------------------------------------


def _not_allowed(lineno: int, what: str) -> tuple[int, str]:
    return lineno, f"line {lineno}: {what} is not allowed in prompt templates"


def _filter_problem(lineno: int, name: str, how: str = "") -> tuple[int, str] | None:
    if name in _ALLOWED_FILTERS:
        return None
    if name not in FILTERS:
        return lineno, f"line {lineno}: there is no filter named {name!r}"
    return _not_allowed(lineno, f"filter {name!r}{how}")


def _problems(tree: nodes.Template) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in tree.find_all(nodes.Node):
        lineno: int = node.lineno or 1
        refused = _REFUSED_NODES.get(type(node))
        problem: tuple[int, str] | None = None
        if refused is not None:
            problem = _not_allowed(lineno, refused)
        elif isinstance(node, nodes.For) and node.recursive:
            problem = _not_allowed(lineno, "recursive for loop")
        elif isinstance(node, nodes.Filter):
            problem = _filter_problem(lineno, node.name)
            first = node.args[0] if node.args else None
            if (
                problem is None
                and node.name == "map"
                and isinstance(first, nodes.Const)
                and isinstance(first.value, str)
            ):
                problem = _filter_problem(lineno, first.value, " (through map)")
        elif isinstance(node, nodes.Test) and node.name not in _ENV.tests:
            problem = lineno, f"line {lineno}: there is no test named {node.name!r}"
        elif isinstance(node, nodes.Name):
            if node.name.startswith(_RESERVED):
                problem = lineno, f"line {lineno}: the name {node.name!r} is reserved"
            elif node.name in _REFUSED_GLOBALS and node.ctx == "load":
                problem = _not_allowed(lineno, f"global {node.name!r}")
        if problem is not None:
            found.append(problem)
    return sorted(found)


def _parse(source: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateRejected(f"line {exc.lineno}: {exc.message}", exc.lineno) from None
    except RecursionError:
        raise TemplateRejected("the template is nested too deeply") from None
    except ValueError as exc:
        # The lexer's int() refuses literals of more than 4300 digits.
        raise TemplateRejected(f"the template could not be parsed: {exc}") from None


def _checked(source: str) -> nodes.Template:
    tree = _parse(source)
    try:
        problems = _problems(tree)
    except RecursionError:
        raise TemplateRejected("the template is nested too deeply") from None
    if problems:
        raise TemplateRejected("; ".join(message for _, message in problems), problems[0][0])
    return tree


def _call(name: str, args: Sequence[nodes.Node], lineno: int | None) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load", lineno=lineno), list(args), [], None, None, lineno=lineno)


class _Instrument(NodeTransformer):
    """Rewrites a checked tree so that loops, output, ``~`` and literals go through the budget."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(_LOOP, [node.iter], node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        parts: list[nodes.Expr] = [
            nodes.Const(child.data, lineno=child.lineno) if isinstance(child, nodes.TemplateData) else child
            for child in node.nodes
        ]
        if parts:
            node.nodes = [_call(_EMIT, parts, node.lineno)]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(_CONCAT, node.nodes, node.lineno)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _call(_ADMIT, [node], node.lineno)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _call(_ADMIT, [node], node.lineno)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _call(_ADMIT, [node], node.lineno) if node.ctx == "load" else node


# --- public API --------------------------------------------------------------------------------


def check_template(source: str) -> None:
    """Parse ``source`` and apply the static rules; raises :class:`TemplateRejected` with the line."""
    _checked(source)


class BoundedTemplate:
    """A checked, instrumented template; render it as often as needed, from any thread."""

    __slots__ = ("_limits", "_template")

    def __init__(self, template: jinja2.Template, limits: TemplateLimits) -> None:
        self._template = template
        self._limits = limits

    @property
    def limits(self) -> TemplateLimits:
        return self._limits

    def render(self, variables: Mapping[str, Any]) -> str:
        """The rendered text. A missing variable raises :class:`jinja2.UndefinedError`, a refused
        operation :class:`jinja2.exceptions.SecurityError`, a hit bound :class:`RenderLimitExceeded`."""
        budget = _Budget(self._limits, variables)
        context = {**variables, **budget.names()}
        limit = self._limits.max_output_chars
        pieces: list[str] = []
        size = 0
        stream = self._template.generate(context)
        try:
            for piece in stream:
                size += len(piece)
                if size > limit:
                    raise RenderLimitExceeded(f"rendered text exceeded max_output_chars ({limit})")
                pieces.append(piece)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return "".join(pieces)


def compile_template(source: str, limits: TemplateLimits = TemplateLimits()) -> BoundedTemplate:
    """Check ``source`` and compile it for bounded rendering; raises :class:`TemplateRejected`."""
    tree = _checked(source)
    try:
        _Instrument().visit(tree)
        tree.set_environment(_ENV)
        code = _ENV.compile(tree)
    except TemplateSyntaxError as exc:
        raise TemplateRejected(f"line {exc.lineno}: {exc.message}", exc.lineno) from None
    except RecursionError:
        raise TemplateRejected("the template is nested too deeply") from None
    template = _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None))
    return BoundedTemplate(template, limits)


def template_variables(source: str) -> set[str]:
    """Names the template reads from its context, leaving out the sandbox's globals such as ``range``."""
    return set(meta.find_undeclared_variables(_parse(source))) - set(_ENV.globals)
