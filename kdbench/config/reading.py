"""Reading a suite: its YAML file (safe loader, size-limited) and ``--set key.path=value``
overrides, whose values are parsed as YAML (``--set train.steps=50``, ``--set seeds=[0]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import KdbenchError
from kdbench.options import load_yaml


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``key.path=value`` to ``data`` in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise KdbenchError(f"--set {assignment!r}: expected key.path=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    if not all(keys):
        raise KdbenchError(f"--set {assignment!r}: empty key in {path!r}")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise KdbenchError(f"--set {assignment!r}: {'.'.join(keys[: i + 1])} is not a mapping")
        node = child
    try:
        node[keys[-1]] = load_yaml(text)
    except yaml.YAMLError as exc:
        raise KdbenchError(f"--set {assignment!r}: value is not valid YAML ({exc})") from None


MAX_NODES = 100_000
"""Most values a suite may hold, aliases expanded (a YAML alias bomb expands to billions)."""


def check_size(data: Any, path: Path) -> None:
    """Refuse a suite whose values, aliases expanded, exceed :data:`MAX_NODES` (or a cycle)."""
    budget = MAX_NODES
    todo = [data]
    while todo:
        node = todo.pop()
        budget -= 1
        if budget < 0:
            raise KdbenchError(
                f"{path}: more than {MAX_NODES} values once YAML aliases are expanded"
            )
        if isinstance(node, dict):
            todo += list(node.keys()) + list(node.values())
        elif isinstance(node, list):
            todo += node


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KdbenchError(f"{path}: suite file not found")
    try:
        data = load_yaml(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise KdbenchError(f"{path}: cannot read the suite ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise KdbenchError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise KdbenchError(f"{path}: not valid YAML{line}") from None
    except RecursionError:
        raise KdbenchError(f"{path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise KdbenchError(f"{path}: expected a mapping at the top level")
    check_size(data, path)
    return data
