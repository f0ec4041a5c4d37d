"""Resolved suites, cached: a finished suite is re-run and its status shown without torch.

Validating a suite imports torch and timm (method and data set classes, backbone names), which
costs seconds; resolving it gives the same run specs as long as nothing it depends on changed.
:func:`load_suite_cached` keeps the resolved suite in
``$XDG_CACHE_HOME/kdbench/suites/<key>.json`` (``~/.cache`` by default; ``$KDBENCH_CACHE``
overrides the folder), where the key hashes everything resolution reads:

- the suite file's bytes, the ``--set`` overrides and the bytes of the plugin files it lists;
- the path, size and modification time of its teacher checkpoint, if it imports one;
- the source of the package (every ``.py`` of ``kdbench/`` and ``methods/``, so any change to a
  method's default or code), the installed versions of torch and timm, and the
  ``kdbench.methods`` entry points;
- ``$KDBENCH_DATA`` (where the data roots are looked for); the data folders themselves are
  checked again on every hit.

A hit costs reading YAML and hashing a few hundred kilobytes of source. A miss, an unreadable or
an unwritable cache means resolving the suite as :func:`kdbench.config.load_suite` does, with the
same result; the cache never holds anything that resolution would not produce again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdbench.config import RunSpec, Suite, apply_override, load_suite, read_yaml
from kdbench.config.imported import checkpoint_path
from kdbench.errors import KdbenchError
from kdbench.provenance import package_hash

CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$KDBENCH_CACHE``, else ``$XDG_CACHE_HOME/kdbench/suites`` (``~/.cache`` by default)."""
    if os.environ.get("KDBENCH_CACHE"):
        return Path(os.environ["KDBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kdbench" / "suites"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_key(path: Path, overrides: Sequence[str]) -> str:
    """The hash of everything the resolved suite of ``path`` depends on (module docstring)."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    text = path.read_bytes()
    add("suite", text)
    add("overrides", json.dumps(list(overrides)).encode())
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    plugins = data.get("plugins")
    for entry in plugins if isinstance(plugins, list) else []:
        plugin = Path(str(entry)) if Path(str(entry)).is_absolute() else path.parent / str(entry)
        add(f"plugin {plugin}", plugin.read_bytes() if plugin.is_file() else b"missing")
    stamp = _checkpoint_stamp(data, path)
    if stamp:
        add("checkpoint", stamp.encode())
    add("package", package_hash().encode())
    add("versions", json.dumps([CACHE_VERSION, _version("torch"), _version("timm")]).encode())
    entry_points = sorted(
        f"{ep.name}={ep.value}" for ep in importlib.metadata.entry_points(group="kdbench.methods")
    )
    add("entry points", json.dumps(entry_points).encode())
    add("data", os.environ.get("KDBENCH_DATA", "").encode())
    return digest.hexdigest()[:32]


def _checkpoint_stamp(data: Any, path: Path) -> str:
    """Path, size and mtime of the suite's teacher checkpoint (its SHA-256, in the resolved
    runs' ids, changes with the file), or "" when it imports none."""
    teacher = data.get("teacher") if isinstance(data, dict) else None
    value = teacher.get("checkpoint") if isinstance(teacher, dict) else None
    if not isinstance(value, str):
        return ""
    file = checkpoint_path(value, path)
    if not file.is_file():
        return f"{file} missing"
    stat = file.stat()
    return f"{file} {stat.st_size} {stat.st_mtime_ns}"


def _to_json(suite: Suite) -> dict[str, Any]:
    return {
        "name": suite.name,
        "settings": suite.settings,
        "teachers": [s.to_dict() for s in suite.teachers],
        "students": [s.to_dict() for s in suite.students],
        "trials": [s.to_dict() for s in suite.trials],
        "stages": [s.to_dict() for s in suite.stages],
        "data_roots": suite.data_roots,
    }


def _from_json(data: dict[str, Any], path: Path) -> Suite:
    return Suite(
        data["name"],
        path,
        data["settings"],
        [RunSpec.from_dict(c) for c in data["teachers"]],
        [RunSpec.from_dict(c) for c in data["students"]],
        data["data_roots"],
        [RunSpec.from_dict(c) for c in data["trials"]],
        [RunSpec.from_dict(c) for c in data["stages"]],
    )


def load_suite_cached(path: str | Path, overrides: Sequence[str] = ()) -> Suite:
    """:func:`kdbench.config.load_suite`, answered from the cache when nothing changed."""
    from kdbench.results.files import write_json_atomic

    path = Path(path)
    if not path.is_file():
        raise KdbenchError(f"{path}: suite file not found")
    key = cache_key(path, overrides)
    cached = cache_dir() / f"{key}.json"
    try:
        suite = _from_json(json.loads(cached.read_text()), path)
        if all(Path(root).is_dir() for root in suite.data_roots):
            return suite  # else resolve again, for the one-line missing-data error
    except (OSError, ValueError, KeyError, TypeError):
        pass
    suite = load_suite(path, overrides)
    try:
        write_json_atomic(cached, _to_json(suite))
    except KdbenchError:
        pass  # an unwritable cache only costs time
    return suite
