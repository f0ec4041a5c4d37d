"""What code a run is: hashes of method sources and of the package, and the git state.

A run id covers the source of the methods the run uses (:func:`methods_hash`), so a change to a
loss gives that method's runs new ids while every other run keeps its id. The record also keeps
:func:`package_hash` (every ``.py`` file of ``kdbench/`` and ``methods/``) and :func:`git_state`,
so a table can say when the cells it aggregates come from different code.

A method's files are its module plus, transitively, every module of the same package (``methods``,
or a plugin file's folder) it imports, found by reading the import statements (no execution):
``methods/lix.py`` imports ``methods.dwld`` and ``methods.arfd``, so a change to DWLD changes the
ids of the DWLD and LIX runs only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("kdbench", "methods")
"""The packages whose source :func:`package_hash` covers."""


def file_hash(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _imported_siblings(path: Path, package: str | None) -> list[Path]:
    """The ``.py`` files of ``package`` (or, for a plugin, of its folder) that ``path`` imports."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: a sibling in the same folder
                names += [f".{base}" if base else f".{a.name}" for a in node.names]
            else:
                names += [base, *(f"{base}.{a.name}" for a in node.names)]
    out = []
    for name in names:
        if name.startswith("."):
            stem = name[1:].split(".")[0]
        elif package and name.startswith(f"{package}."):
            stem = name[len(package) + 1 :].split(".")[0]
        else:
            continue
        candidate = path.parent / f"{stem}.py"
        if candidate.is_file():
            out.append(candidate)
    return out


def method_files(cls: type) -> list[Path]:
    """The source files of method class ``cls``: its module and the siblings it imports."""
    module = sys.modules[cls.__module__]
    start = Path(module.__file__ or "").resolve()
    package = cls.__module__.rpartition(".")[0] or None
    seen: dict[Path, None] = {}
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen[path] = None
        todo += [p.resolve() for p in _imported_siblings(path, package)]
    return sorted(seen)


def methods_hash(classes: Iterable[type]) -> str:
    """16 hex digits over the names and contents of every source file of ``classes``; ``""``
    for no class (teachers and the student baseline depend on no method code)."""
    files = sorted({p for cls in classes for p in method_files(cls)})
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def package_files() -> list[Path]:
    """Every ``.py`` file of the packages in :data:`PACKAGES` (found without importing them)."""
    import importlib.util

    files: list[Path] = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            files += Path(folder).rglob("*.py")
    return sorted(files)


@functools.lru_cache(maxsize=1)
def package_hash() -> str:
    """16 hex digits over the relative paths and contents of :func:`package_files`."""
    digest = hashlib.sha256()
    for path in package_files():
        digest.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, object] | None:
    """``{"commit", "dirty"}`` of the git checkout holding the package, None outside one."""
    folder = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no", "--", *PACKAGES)
    return {"commit": commit, "dirty": bool(status)}


def provenance() -> dict[str, object]:
    """The code a record was made with: kdbench version, package hash, git commit and state."""
    import kdbench

    return {
        "kdbench": kdbench.__version__,
        "package_hash": package_hash(),
        "git": git_state(),
    }
