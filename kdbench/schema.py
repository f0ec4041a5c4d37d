"""A small declarative checker for nested YAML data, with errors that name the key path.

A schema is a nested dict of ``key -> Field``; :func:`check` walks the data against it and raises
:class:`KdbenchError` on the first problem, naming the full key path (``train.lr: expected a
number, got 'fast'``). Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.options import plain_number_problem


@dataclass(frozen=True)
class Field:
    """One key: its expected types, default, and an optional extra check returning an error text."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    check: Callable[[Any], str | None] | None = None
    children: Mapping[str, Field] | None = field(default=None)
    """For a mapping value: the schema of its keys (unknown keys are errors)."""


def _type_name(types: tuple[type, ...]) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # YAML's `yes` must not pass as the number 1
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


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
        value = data[key]
        if not _is_instance(value, spec.types):
            raise KdbenchError(
                f"{where}: {key_path}: expected {_type_name(spec.types)}, got {value!r}"
            )
        if (problem := _numbers_problem(value)) is not None:
            raise KdbenchError(f"{where}: {key_path}: {problem}, got {value!r}")
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and float in spec.types
            and int not in spec.types
        ):
            value = float(value)
        if spec.children is not None and isinstance(value, dict):
            value = check(value, spec.children, where, f"{key_path}.")
        if spec.check is not None and (problem := spec.check(value)):
            raise KdbenchError(f"{where}: {key_path}: {problem}, got {value!r}")
        out[key] = value
    return out


def _numbers_problem(value: Any) -> str | None:
    """Why a number in ``value`` (or in a list of it) cannot be used, else None."""
    for item in value if isinstance(value, list) else [value]:
        if (problem := plain_number_problem(item)) is not None:
            return problem
    return None


def positive(value: Any) -> str | None:
    return None if value is None or value > 0 else "expected a positive value"


def non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else "expected a value >= 0"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check_choice(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(map(str, choices))}"

    return check_choice
