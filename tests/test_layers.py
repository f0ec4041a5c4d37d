"""The package is layered as its data flow: a suite is read (config), launched (launch), trained
(train), stored (results) and reported (report); upper layers call lower ones, never the reverse.

Every module's imports are read with ``ast`` (at module level, inside functions and under
``TYPE_CHECKING`` alike, by ``tests/layering.py``, as for the report package): a
module imports only from its own layer or the layers below, and no chain of imports comes back to
where it started. In particular config and train never import launch, methods never import
train (the executors call training, never the reverse).
"""

from __future__ import annotations

from pathlib import Path

import kdbench
from tests import layering

LAYERS: tuple[tuple[str, ...], ...] = (
    ("kdbench", "errors", "options", "schema", "search", "registry", "provenance", "cpus",
     "resources"),
    ("data", "models", "connectors", "method", "distributed"),
    ("methods",),
    ("results",),
    ("config", "suite_cache"),
    ("train",),
    ("launch",),
    ("reproduce", "export", "figure", "report", "cli"),
)
"""Bottom first: the top-level modules and subpackages of ``kdbench`` (``kdbench`` itself is the
package's ``__init__``) and the ``methods`` package, by layer."""
NAMES = ("foundations", "parts", "methods", "results", "config", "train", "launch", "commands")
PACKAGES = ("kdbench", "methods")


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) of every module of :data:`PACKAGES` under ``root``."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def area(name: str) -> str:
    """``kdbench.train.run`` -> ``train``; ``methods.kd`` -> ``methods``; ``kdbench`` itself."""
    parts = name.split(".")
    if parts[0] == "methods" or len(parts) == 1:
        return parts[0]
    return parts[1]


def layer(name: str) -> int | None:
    """The index in :data:`LAYERS` of the module ``name``'s area, or None where it is in none."""
    return next((i for i, areas in enumerate(LAYERS) if area(name) in areas), None)


FACADE = {"kdbench": {"kdbench.export"}}
"""Lazy imports of the package's public entry points (``kdbench.load_student``) inside the
functions of its ``__init__``: a facade over the layers, not a dependency of the foundations."""


def problems(root: Path) -> list[str]:
    """Every module in no layer, every upward import and every import cycle."""
    found = modules(root)
    graph = {
        name: layering.imported(name, path, is_package, set(found)) - FACADE.get(name, set())
        for name, (path, is_package) in found.items()
    }
    names = tuple(f"layer {name}" for name in NAMES)
    return layering.problems(
        graph, layer, names, lambda name: f"{name}: {area(name)} is in no layer of LAYERS")


def test_the_package_is_layered_as_its_data_flow() -> None:
    root = Path(kdbench.__file__).parent.parent
    assert len(modules(root)) > 50  # the walk found the packages
    assert problems(root) == []


def test_the_check_finds_launch_imported_by_config_and_train_and_train_by_methods(
    tmp_path: Path,
) -> None:
    files = {
        "kdbench/__init__.py": "",
        "kdbench/config.py": "def expand():\n    from kdbench.launch.slurm import plan\n",
        "kdbench/launch/__init__.py": "",
        "kdbench/launch/local.py": "from kdbench.train.run import train_run\n",
        "kdbench/launch/slurm.py": "from ..train import run\n",
        "kdbench/train/__init__.py": "",
        "kdbench/train/run.py": "from kdbench.launch import local\n",
        "kdbench/graph.py": "",
        "methods/__init__.py": "",
        "methods/kd.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kdbench.train.distributed import current\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert problems(tmp_path) == [
        "kdbench.config imports kdbench.launch.slurm: layer launch, above layer config",
        "kdbench.graph: graph is in no layer of LAYERS",
        "kdbench.train.run imports kdbench.launch.local: layer launch, above layer train",
        "methods.kd imports kdbench.train: layer train, above layer methods",
        "import cycle among kdbench.launch.local, kdbench.train.run",
    ]
