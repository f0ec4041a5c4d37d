"""A small declarative checker for nested YAML data, with errors that name the key path.

A schema is a nested dict of ``key -> Field``, checked by the one option checker
(:mod:`kdbench.options`: types, constraints, the float rule); :func:`check` walks the data
against it and raises :class:`KdbenchError` on the first problem, naming the full key path
(``train.lr: expected a number > 0, got 'fast'``). Unknown keys are errors, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from kdbench import options
from kdbench.errors import KdbenchError
from kdbench.options import Constraint, Ge, Gt, OneOf


@dataclass(frozen=True)
class Field:
    """One key: its expected types, default, and an optional check: a
    :class:`~kdbench.options.Constraint` (``Gt(0)``, checked with the types, by the same checker
    and float rule as every registry's options) or a function returning an error text."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    check: Constraint | Callable[[Any], str | None] | None = None
    children: Mapping[str, Field] | None = field(default=None)
    """For a mapping value: the schema of its keys (unknown keys are errors)."""


def hint_of(spec: Field) -> Any:
    """The annotation a field stands for: the union of its types, with its check if that is a
    :class:`~kdbench.options.Constraint` (``Annotated[int, Ge(0)] | None``, so the message
    says ``an integer >= 0 or null``)."""
    values = tuple(t for t in spec.types if t is not type(None))
    hint: Any = Union[values] if len(values) > 1 else values[0]  # noqa: UP007
    if isinstance(spec.check, Constraint):
        hint = Annotated[hint, spec.check]
    return hint | None if type(None) in spec.types else hint


def check(data: Any, schema: Mapping[str, Field], where: str, path: str = "") -> dict[str, Any]:
    """Validate ``data`` (a mapping) against ``schema``; return it with defaults filled in.

    ``where`` prefixes every error (usually the suite file); ``path`` is the key path so far.
    """
    if not isinstance(data, dict):
        raise KdbenchError(f"{where}: {path or 'top level'}: expected a mapping, got {data!r}")
    for key in data:
        if key not in schema:
            known = ", ".join(schema)
            raise KdbenchError(f"{where}: {path}{key}: unknown key; expected one of: {known}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        key_path = f"{path}{key}"
        if key not in data:
            if spec.required:
                raise KdbenchError(f"{where}: {key_path}: required key is missing")
            value = spec.default
            if spec.children is not None and value is None and dict in spec.types:
                value = {}
            if isinstance(value, dict) and spec.children is not None:
                value = check(value, spec.children, where, f"{key_path}.")
            out[key] = value
            continue
        out[key] = _given(data[key], spec, where, key_path)
    return out


def _given(value: Any, spec: Field, where: str, key_path: str) -> Any:
    """A given ``value`` checked against ``spec`` (its type and constraint by
    :func:`kdbench.options.problem`, then its other check), after the float rule."""
    hint = hint_of(spec)
    text = options.problem(value, hint)
    if text is None:
        value = options.coerce(value, hint)
        if spec.children is not None and isinstance(value, dict):
            value = check(value, spec.children, where, f"{key_path}.")
        if spec.check is not None and not isinstance(spec.check, Constraint):
            text = spec.check(value)
    if text:
        raise KdbenchError(f"{where}: {key_path}: {text}, got {value!r}")
    return value


positive = Gt(0)
"""A number > 0 (or null where the field allows it)."""
non_negative = Ge(0)
"""A number >= 0 (or null where the field allows it)."""


def one_of(*choices: Any) -> Constraint:
    """One of ``choices`` (message: ``expected one of a, b``)."""
    return OneOf(choices)
