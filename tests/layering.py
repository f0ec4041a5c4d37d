"""The import-layering check that tests/test_layers.py (the package) and
tests/report/test_layers.py (the report package) apply: imports read with ``ast`` (module level,
inside functions and under ``TYPE_CHECKING`` alike), upward imports and cycles reported."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path


def imported(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` imports (absolute or relative)."""

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    package = name if is_package else name.rpartition(".")[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets += [f"{base}.{alias.name}" for alias in node.names]
    return {t for t in map(resolve, targets) if t is not None and t != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def problems(
    graph: dict[str, set[str]],
    layer: Callable[[str], int | None],
    names: tuple[str, ...],
    unplaced: Callable[[str], str],
) -> list[str]:
    """Every module in no layer (``unplaced(name)`` says so), every import of a module in a
    higher layer (``names[i]`` names layer i) and every import cycle of ``graph``."""
    out = []
    for name in sorted(graph):
        own = layer(name)
        if own is None:
            out.append(unplaced(name))
            continue
        for target in sorted(graph[name]):
            theirs = layer(target)
            if theirs is not None and theirs > own:
                out.append(f"{name} imports {target}: {names[theirs]}, above {names[own]}")
    out += [f"import cycle among {', '.join(c)}" for c in cycles(graph)]
    return out
