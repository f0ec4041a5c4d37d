"""The report package is a one-way pipeline of four layers (see :mod:`kdbench.report`).

Every module's imports are read with ``ast`` (at module level, inside functions and under
``TYPE_CHECKING`` alike): a module of a layer imports only from its own layer or the layers
below, never from a layer above or from an entry point, and no chain of imports comes back to
where it started. The entry points (the package's ``__init__`` and ``commands``) sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kdbench

PACKAGE = "kdbench.report"
LAYERS = ("records", "cells", "words", "render")
"""The layers, bottom first: ``kdbench.report.<layer>`` subpackages."""
ENTRY_POINTS = (PACKAGE, f"{PACKAGE}.commands")
TOP = len(LAYERS)


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) of every module of the report package under ``root``
    (the folder holding ``kdbench/``)."""
    out = {}
    for path in sorted((root / PACKAGE.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


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


def layer(name: str) -> int | None:
    """0 for records … 3 for render, :data:`TOP` for an entry point, None for neither."""
    if name in ENTRY_POINTS:
        return TOP
    first = name[len(PACKAGE) + 1 :].split(".")[0] if name.startswith(PACKAGE + ".") else ""
    return LAYERS.index(first) if first in LAYERS else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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


def problems(root: Path) -> list[str]:
    """Every module outside the layers, every upward import and every import cycle."""
    found = modules(root)
    graph = {
        name: imported(name, path, is_package, set(found))
        for name, (path, is_package) in found.items()
    }
    out = []
    for name in sorted(graph):
        own = layer(name)
        if own is None:
            out.append(f"{name}: in no layer ({', '.join(LAYERS)}) and not an entry point")
            continue
        for target in sorted(graph[name]):
            theirs = layer(target)
            if theirs is not None and theirs > own:
                above = "an entry point" if theirs == TOP else f"layer {LAYERS[theirs]}"
                out.append(f"{name} imports {target}: {above}, above {LAYERS[own]}")
    out += [f"import cycle among {', '.join(c)}" for c in _cycles(graph)]
    return out


def test_the_report_package_is_a_one_way_pipeline_of_four_layers() -> None:
    root = Path(kdbench.__file__).parent.parent
    assert len(modules(root)) > len(LAYERS) + len(ENTRY_POINTS)  # the walk found the package
    assert problems(root) == []


def test_the_check_finds_unplaced_modules_upward_imports_and_cycles(tmp_path: Path) -> None:
    report = tmp_path / "kdbench" / "report"
    files = {
        "__init__.py": "from kdbench.report.cells import tables\n",
        "commands.py": "from kdbench.report import load_results\n",
        "flat.py": "",
        "cells/__init__.py": "",
        "cells/tables.py": "def f():\n    from ..words.text import number\n",
        "words/__init__.py": "",
        "words/text.py": "from kdbench.report.cells import tables\n",
        "records/__init__.py": "",
        "records/frame.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import kdbench.report.commands\n",
    }
    for name, text in files.items():
        (report / name).parent.mkdir(parents=True, exist_ok=True)
        (report / name).write_text(text)
    assert problems(tmp_path) == [
        "kdbench.report.cells.tables imports kdbench.report.words.text: layer words, above cells",
        "kdbench.report.flat: in no layer (records, cells, words, render) and not an entry point",
        "kdbench.report.records.frame imports kdbench.report.commands: an entry point, above "
        "records",
        "import cycle among kdbench.report.cells.tables, kdbench.report.words.text",
    ]
