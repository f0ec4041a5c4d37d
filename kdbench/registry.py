"""Named registries: methods, datasets, teachers, decoder heads; filled by decorators next to them.

Adding a method, a data set or a teacher means writing one file with a decorator; nothing else
needs editing. Backbones are not registered here: any name timm knows is a backbone (see
:mod:`kdbench.models.backbone`).

Example::

    @register_method("kd", "Hinton et al. 2015: temperature-scaled pixel-wise KL")
    class KD(Method): ...

Third-party methods plug in through the entry-point group ``kdbench.methods`` (each entry point
names a module that registers its methods on import) or a suite's ``plugins:`` list of file paths.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from kdbench.errors import KdbenchError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with the one-line description shown by ``kdbench list``."""

    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """A dict of named objects with a decorator to fill it and errors that list the known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; the description defaults to its docstring."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (inspect.getdoc(obj) or "").split("\n", 1)[0]
            self._entries[name] = Entry(name, obj, doc)
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as ``name``; a :class:`KdbenchError` listing the known names."""
        self._load_builtins()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KdbenchError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name].obj

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load_builtins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return [e.name for e in self]

    def _load_builtins(self) -> None:
        load_builtins()


METHODS: Registry[Any] = Registry("method")
DATASETS: Registry[Any] = Registry("dataset")
TEACHERS: Registry[Any] = Registry("teacher")
HEADS: Registry[Any] = Registry("head")

register_method = METHODS.register
register_dataset = DATASETS.register
register_teacher = TEACHERS.register
register_head = HEADS.register

_BUILTIN_MODULES = ("methods", "kdbench.data", "kdbench.models")
_loaded = False


def load_builtins() -> None:
    """Import the built-in packages and the ``kdbench.methods`` entry points once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in importlib.metadata.entry_points(group="kdbench.methods"):
        ep.load()


def import_submodules(package: str) -> None:
    """Import every module of ``package`` so that their decorators register them."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")


def load_plugin_file(path: str | Path) -> None:
    """Import a Python file that registers methods (a suite's ``plugins:`` entry)."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise KdbenchError(f"plugin {str(path)!r}: expected an existing .py file")
    name = f"kdbench_plugin_{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def load_plugin_files(plugins: Iterable[tuple[str, str]]) -> None:
    """Import a run's recorded plugin files (``(path, SHA-256)`` pairs, see ``RunSpec.plugins``)
    in this process, refusing a file whose content changed since the suite was validated."""
    from kdbench.provenance import file_hash

    for path, digest in plugins:
        if not Path(path).is_file():
            raise KdbenchError(f"plugin {path!r}: file not found in this process")
        if file_hash(path) != digest:
            raise KdbenchError(
                f"plugin {path!r}: changed since the suite was loaded; run the suite again"
            )
        load_plugin_file(path)
