"""The report package is a one-way pipeline of four layers (see :mod:`kdbench.report`).

Every module's imports are read with ``ast`` (at module level, inside functions and under
``TYPE_CHECKING`` alike): a module of a layer imports only from its own layer or the layers
below, never from a layer above or from an entry point, and no chain of imports comes back to
where it started. The entry points (the package's ``__init__`` and ``commands``) sit on top.
"""

from __future__ import annotations

from pathlib import Path

import kdbench
from tests import layering

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


def layer(name: str) -> int | None:
    """0 for records … 3 for render, :data:`TOP` for an entry point, None for neither."""
    if name in ENTRY_POINTS:
        return TOP
    first = name[len(PACKAGE) + 1 :].split(".")[0] if name.startswith(PACKAGE + ".") else ""
    return LAYERS.index(first) if first in LAYERS else None


def problems(root: Path) -> list[str]:
    """Every module outside the layers, every upward import and every import cycle."""
    found = modules(root)
    graph = {
        name: layering.imported(name, path, is_package, set(found))
        for name, (path, is_package) in found.items()
    }
    names = (*(f"layer {name}" for name in LAYERS), "an entry point")
    return layering.problems(graph, layer, names, lambda name: (
        f"{name}: in no layer ({', '.join(LAYERS)}) and not an entry point"))


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
        "kdbench.report.cells.tables imports kdbench.report.words.text: layer words, above layer "
        "cells",
        "kdbench.report.flat: in no layer (records, cells, words, render) and not an entry point",
        "kdbench.report.records.frame imports kdbench.report.commands: an entry point, above "
        "layer records",
        "import cycle among kdbench.report.cells.tables, kdbench.report.words.text",
    ]
