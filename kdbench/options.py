"""The one option resolver: every registry's options, read from a signature and its type hints.

A method's, data set's, head's or teacher's options are the keyword parameters of its
constructor; the annotation is the schema and the default is the default. Constraints are
declared beside the parameter with :data:`typing.Annotated`::

    def __init__(self, student, teacher, *,
                 tau: Annotated[float, Gt(0)] = 1.0,
                 anchors: Annotated[int, Ge(1)] = 64,
                 warmup: Annotated[float, Interval(0, 1, closed="left")] = 0.08,
                 kernel: Literal["laplace", "gaussian"] = "laplace",
                 pair_group: Annotated[int, Ge(1)] | None = 2): ...

Understood annotations: ``int``, ``float``, ``str``, ``bool``, ``None``, unions, ``Literal[...]``,
lists/tuples/sequences (a YAML list or a Python tuple, each item checked), bare classes
(``dict``, ``list``) and ``Annotated[hint, constraint, ...]``; any other annotation accepts any
value.

Rules, the same for every registry and for the suite schema (:mod:`kdbench.schema`):

- types: ``float`` accepts an integer; ``int`` and ``float`` refuse booleans (YAML's ``yes``);
  integers must fit in 64 bits and floats be finite;
- the float rule (:func:`coerce`): an integer given where the annotation admits a float but not
  an integer becomes a float, so ``1`` and ``1.0`` are one setting and hash to one run id;
- one error format: ``<where>.<key>: expected <what>, got <value>`` (what the annotation and its
  constraints say, e.g. ``method 'cirkd'.tau: expected a number > 0, got 0.0``); an unknown key
  is ``<where>: unknown option '<key>'; options: a, b``.

:func:`load_yaml` is the YAML reader of suites and ``--set``: YAML 1.1 plus numbers in
scientific notation without a dot (``1e-4``, ``2e-2``), which YAML 1.1 reads as strings.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml

from kdbench.errors import KdbenchError

INT_LIMIT = 2**63
"""Integers must fit in 64 bits (seeds, sizes, counts); floats must be finite."""


# ---------------------------------------------------------------------------------------------
# Constraints, declared beside a parameter: ``Annotated[int, Ge(1)]``.


class Constraint:
    """A condition on a value, with the words an error message uses for it (``>= 1``).

    ``None`` always satisfies a constraint (``Annotated[int, Ge(1)] | None`` allows null).
    """

    text: str = ""
    replaces_type: bool = False
    """Whether :attr:`text` alone says what is expected (``one of a, b``), without the type."""

    def holds(self, value: Any) -> bool:
        raise NotImplementedError

    def __call__(self, value: Any) -> str | None:
        """``expected <text>`` if ``value`` breaks the constraint, else None (a schema check)."""
        if value is None or self.holds(value):
            return None
        return f"expected {self.text if self.replaces_type else 'a value ' + self.text}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Ge(Constraint):
    """value >= bound."""

    bound: float

    @property
    def text(self) -> str:  # type: ignore[override]
        return f">= {self.bound}"

    def holds(self, value: Any) -> bool:
        return not _number(value) or value >= self.bound


@dataclass(frozen=True)
class Gt(Constraint):
    """value > bound."""

    bound: float

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"> {self.bound}"

    def holds(self, value: Any) -> bool:
        return not _number(value) or value > self.bound


@dataclass(frozen=True)
class Interval(Constraint):
    """low <= value <= high, each end open or closed: ``closed`` is both, left, right or neither."""

    low: float
    high: float
    closed: Literal["both", "left", "right", "neither"] = "both"

    @property
    def text(self) -> str:  # type: ignore[override]
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"in {left}{self.low}, {self.high}{right}"

    def holds(self, value: Any) -> bool:
        if not _number(value):
            return True
        above = value >= self.low if self.closed in ("both", "left") else value > self.low
        below = value <= self.high if self.closed in ("both", "right") else value < self.high
        return above and below


@dataclass(frozen=True)
class OneOf(Constraint):
    """value is one of ``choices`` (the suite schema's form of ``Literal``)."""

    choices: tuple[Any, ...]
    replaces_type = True

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"one of {', '.join(map(str, self.choices))}"

    def holds(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Odd(Constraint):
    """An odd integer (a centred window: a dilation, a pooling kernel)."""

    @property
    def text(self) -> str:  # type: ignore[override]
        return "that is odd"

    def holds(self, value: Any) -> bool:
        return not isinstance(value, int) or value % 2 == 1


@dataclass(frozen=True)
class NonEmpty(Constraint):
    """A string or list that is not empty."""

    @property
    def text(self) -> str:  # type: ignore[override]
        return "(not empty)"

    def holds(self, value: Any) -> bool:
        return not isinstance(value, str | list | tuple) or len(value) > 0


# ---------------------------------------------------------------------------------------------
# Checking a value against an annotation.


def plain_number_problem(value: Any) -> str | None:
    """Why a YAML number cannot be used (beyond 64 bits, or not finite), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not -INT_LIMIT < value < INT_LIMIT:
        return "expected an integer that fits in 64 bits"
    if isinstance(value, float) and not math.isfinite(value):
        return "expected a finite number"
    return None


def _split(hint: Any) -> tuple[Any, tuple[Constraint, ...]]:
    """``Annotated[h, c1, c2]`` -> ``(h, (c1, c2))``; any other hint -> ``(hint, ())``."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        return base, tuple(m for m in meta if isinstance(m, Constraint))
    return hint, ()


def _members(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a union (the hint itself if it is not one)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def matches(value: Any, hint: Any) -> bool:
    """Does ``value`` (YAML data) fit the annotation ``hint``, constraints included?"""
    if plain_number_problem(value) is not None:
        return False
    return _matches(value, hint)


def _matches(value: Any, hint: Any) -> bool:
    hint, constraints = _split(hint)
    if not all(c.holds(value) for c in constraints):
        return False
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, list | tuple) and _items_match(list(value), origin, args)
    if hint is float:
        return _number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool, list, dict):
        return isinstance(value, hint)
    return True


def _items_match(value: list[Any], origin: Any, args: tuple[Any, ...]) -> bool:
    if origin is tuple and args and args[-1] is not Ellipsis:
        return len(value) == len(args) and all(map(matches, value, args))
    item = args[0] if args else Any
    return all(matches(v, item) for v in value)


NOUNS = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}
PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def describe(hint: Any) -> str:
    """What an annotation expects, in words: ``an integer >= 1 or null``, ``one of a, b``."""
    hint, constraints = _split(hint)
    if constraints:
        if any(c.replaces_type for c in constraints):
            return " and ".join(c.text for c in constraints)
        return f"{describe(hint)} {' and '.join(c.text for c in constraints)}"
    if hint is None:
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is Literal:
        return f"one of {', '.join(map(str, args))}"
    if origin in (list, tuple, collections.abc.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis and len(set(args)) == 1:
            return f"a list of {len(args)} {PLURALS.get(args[0]) or describe(args[0])}"
        items = [PLURALS.get(a) or describe(a) for a in args if a is not Ellipsis]
        return f"a list of {', '.join(items)}" if items else "a list"
    if hint in NOUNS:
        return NOUNS[hint]
    text = str(hint).replace("typing.", "").replace("collections.abc.", "")
    return text.replace("<class '", "").replace("'>", "")


def _admits(hint: Any, kind: type) -> bool:
    return any(_split(m)[0] is kind for m in _members(_split(hint)[0]))


def coerce(value: Any, hint: Any) -> Any:
    """The float rule: an integer where ``hint`` admits a float but not an integer becomes a
    float; a tuple becomes a list (JSON data); anything else is returned unchanged."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if _admits(hint, float) and not _admits(hint, int):
            return float(value)
    return value


def problem(value: Any, hint: Any) -> str | None:
    """``expected <what>`` if ``value`` does not fit ``hint``, else None."""
    if (text := plain_number_problem(value)) is not None:
        return text
    if isinstance(value, list) and (text := _first_number_problem(value)) is not None:
        return text
    return None if _matches(value, hint) else f"expected {describe(hint)}"


def _first_number_problem(values: Iterable[Any]) -> str | None:
    return next((p for v in values if (p := plain_number_problem(v)) is not None), None)


# ---------------------------------------------------------------------------------------------
# Options read from a signature, and the resolver.


@dataclass(frozen=True)
class Option:
    """One keyword option: its annotation (constraints included) and default."""

    name: str
    hint: Any
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def describe(self) -> str:
        """``name: what (default)`` for ``kdbench list``."""
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.name}: {describe(self.hint)} ({default})"


def type_hints(function: Any) -> dict[str, Any]:
    """The evaluated annotations of ``function``, ``Annotated`` constraints kept; empty when one
    does not evaluate (then only names are checked)."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # noqa: BLE001 - any failure to evaluate an annotation
        return {}


def signature_options(function: Callable[..., Any], skip: int = 0) -> dict[str, Option]:
    """The options of ``function`` (a class: of its constructor): its keyword-capable
    parameters after the first ``skip`` (``self`` of an unbound ``__init__``, and the inputs its
    caller passes itself, such as a method's tap infos)."""
    params = list(inspect.signature(function).parameters.values())[skip:]
    hints = type_hints(function.__init__ if inspect.isclass(function) else function)
    return {
        p.name: Option(p.name, hints.get(p.name, Any), p.default)
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def unknown_option(where: str, key: Any, known: Iterable[str]) -> KdbenchError:
    """The error for an option ``key`` that ``where`` does not take."""
    listed = ", ".join(known) or "none"
    return KdbenchError(f"{where}: unknown option {key!r}; options: {listed}")


def check(where: str, option: Option, value: Any) -> Any:
    """``value`` for ``option`` after the float rule; :class:`KdbenchError` if it does not fit."""
    if (text := problem(value, option.hint)) is not None:
        raise KdbenchError(f"{where}.{option.name}: {text}, got {value!r}")
    return coerce(value, option.hint)


def resolve(
    options: Mapping[str, Option], given: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """``given`` checked against ``options`` and completed with their defaults.

    ``where`` names the owner in errors (``method 'kd'``, ``suite.yaml: datasets.kitti``).
    Raises :class:`KdbenchError` for an unknown option, a missing required one or a value that
    does not fit (the module docstring's format). Defaults are returned as declared (tuples as
    lists), not checked.
    """
    for key in given:
        if key not in options:
            raise unknown_option(where, key, options)
    out: dict[str, Any] = {}
    for name, option in options.items():
        if name in given:
            out[name] = check(where, option, given[name])
        elif option.required:
            raise KdbenchError(f"{where}.{name}: required option is missing")
        else:
            out[name] = coerce(option.default, Any)
    return out


def resolve_kwargs(cls: type, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A data set's options (its constructor's keyword parameters, ``split`` excluded),
    resolved by :func:`resolve`."""
    specs = signature_options(cls)
    specs.pop("split", None)
    return resolve(specs, options, where)


# ---------------------------------------------------------------------------------------------
# YAML with numbers in scientific notation.

SCIENTIFIC = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")
"""A number in scientific notation without a dot (``1e-4``, ``5E-3``, ``-1e+2``): a float in
YAML 1.2 and in every paper's config, a string in YAML 1.1."""


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads :data:`SCIENTIFIC` as a float (nothing else changes:
    ``yes``, ``no``, ``0o17`` and every other YAML 1.1 reading stay as they are)."""


Loader.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", SCIENTIFIC, list("-+0123456789"))


def load_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` with :data:`SCIENTIFIC` numbers read as floats."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
