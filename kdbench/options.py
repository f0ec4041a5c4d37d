"""Keyword options of a registered class, checked by name and type and resolved to defaults.

A data set's options are the keyword parameters of its class (``split`` excluded); their type
annotations are the schema: ``int``, ``float`` (an integer is accepted and becomes a float),
``str``, ``bool``, ``None``, unions, ``Literal[...]``, and lists/tuples/sequences (a YAML list,
each item checked). :func:`resolve_kwargs` returns the options with every default filled in, as
canonical JSON data, so that two spellings of one setting hash to one run id.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from typing import Any

from kdbench.errors import KdbenchError

INT_LIMIT = 2**63
"""Integers must fit in 64 bits (seeds, sizes, counts); floats must be finite."""


def plain_number_problem(value: Any) -> str | None:
    """Why a YAML number cannot be used (beyond 64 bits, or not finite), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not -INT_LIMIT < value < INT_LIMIT:
        return "expected an integer that fits in 64 bits"
    if isinstance(value, float) and not math.isfinite(value):
        return "expected a finite number"
    return None


def matches(value: Any, hint: Any) -> bool:
    """Does ``value`` (YAML data) fit the annotation ``hint``? Unknown hints accept anything."""
    if plain_number_problem(value) is not None:
        return False
    return _matches(value, hint)


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(matches, value, args))
        item = args[0] if args else Any
        return all(matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("collections.abc.", "")
    return text.replace("<class '", "").replace("'>", "")


def type_hints(function: Any) -> dict[str, Any]:
    """The evaluated annotations of ``function``; empty when one does not evaluate (then only
    names are checked)."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - any failure to evaluate an annotation
        return {}


def describe(hint: Any) -> str:
    """A short name for an annotation, for error messages."""
    return _describe(hint)


def option_hints(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword options of ``cls`` (``split`` and ``self`` excluded), as parameters."""
    params = inspect.signature(cls).parameters
    return {
        name: p
        for name, p in params.items()
        if name != "split" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def resolve_kwargs(cls: type, options: dict[str, Any], where: str) -> dict[str, Any]:
    """``options`` checked against the signature of ``cls`` and completed with its defaults.

    ``where`` names the options in errors (``suite.yaml: datasets.kitti``). Raises
    :class:`KdbenchError` for an unknown option, a missing required one or a wrong type.
    """
    params = option_hints(cls)
    hints = type_hints(cls.__init__)
    for key in options:
        if key not in params:
            raise KdbenchError(f"{where}.{key}: unknown option; options: {', '.join(params)}")
    out: dict[str, Any] = {}
    for name, p in params.items():
        if name in options:
            value = options[name]
            hint = hints.get(name, Any)
            if not matches(value, hint):
                raise KdbenchError(f"{where}.{name}: expected {_describe(hint)}, got {value!r}")
            if hint is float or (isinstance(p.default, float) and isinstance(value, int)):
                value = float(value)
        elif p.default is p.empty:
            raise KdbenchError(f"{where}.{name}: required option is missing")
        else:
            value = p.default
        out[name] = list(value) if isinstance(value, tuple) else value
    return out
