"""Fast loading of a results folder: a cache of the flat rows next to the run records.

Parsing every ``runs/<id>/record.json`` is the cost of loading results: a record carries its
training history and is tens of kilobytes, and the table needs about forty numbers of it. So
:func:`load_frame` keeps the flat rows (:func:`kdbench.report.records.frame.row`) of the
records it has parsed in ``<results>/.kdbench-report-cache.json`` (column by column, which keeps
it small) and parses again only the records whose file changed. A record is unchanged when its
(mtime in ns, size, inode) are those cached: the store replaces a record by renaming a new file
over it, which gives a new inode.

The cache is an optimisation only: a missing, unreadable, stale-version or unwritable cache
means parsing every record, with the same result. It never holds anything the records do not.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.errors import KdbenchError
from kdbench.report.records.frame import ROW_VERSION, columns_to_frame, corrupt_row, row
from kdbench.results.store import CorruptRecord, read_record

CACHE_NAME = ".kdbench-report-cache.json"


def _record_files(root: Path) -> list[tuple[str, Path, list[int]]]:
    """(run folder name, record path, [mtime_ns, size, inode]) of every record, sorted by name."""
    runs = root / "runs"
    out = []
    if runs.is_dir():
        with os.scandir(runs) as entries:
            for entry in entries:
                path = Path(entry.path) / "record.json"
                try:
                    st = os.stat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                out.append((entry.name, path, [st.st_mtime_ns, st.st_size, st.st_ino]))
    return sorted(out)


Cached = tuple[list[str], list[Any], dict[str, list[Any]]]
"""(run folder names, their stat keys, {column: values}) as the cache stores them."""


def _read_cache(path: Path) -> Cached:
    """The cached rows, column by column; empty if the cache is missing or unusable."""
    try:
        with open(path) as f:
            cache = json.load(f)
        names, stats, columns = cache["runs"], cache["stats"], cache["columns"]
        if cache["version"] != ROW_VERSION or len(stats) != len(names) or any(
            len(values) != len(names) for values in columns.values()
        ):
            raise ValueError("stale cache")
        return names, stats, columns
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [], [], {}


def _write_cache(path: Path, names: list[str], stats: list[Any],
                 columns: dict[str, list[Any]]) -> None:
    """Replace the cache atomically (temp file + rename); silently skip if not writable."""
    text = json.dumps({"version": ROW_VERSION, "runs": names, "stats": stats, "columns": columns})
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _parse(name: str, path: Path) -> dict[str, Any]:
    """The row of one record file; a corrupt record is a ``corrupt`` row with the reason."""
    try:
        return row(read_record(path))
    except CorruptRecord as exc:
        return corrupt_row(name, exc.reason)


def load_frame(path: str | Path) -> pd.DataFrame:
    """The DataFrame of every record under ``path`` (see :func:`kdbench.report.load_results`)."""
    root = Path(path)
    if not root.is_dir():
        raise KdbenchError(f"results folder {str(root)!r} does not exist")
    files = _record_files(root)
    if not files:
        raise KdbenchError(f"no run records in {str(root)!r} (expected runs/<id>/record.json)")
    cache_path = root / CACHE_NAME
    names, stats, columns = _read_cache(cache_path)
    index = {name: i for i, name in enumerate(names)}
    hits = [index.get(name) for name, _, _ in files]
    hits = [i if i is not None and stats[i] == stat else None
            for i, (_, _, stat) in zip(hits, files, strict=True)]
    if len(files) == len(names) and None not in hits:  # files and cache are in name order
        return columns_to_frame(columns)
    rows = [
        _parse(name, record_path) if i is None else {c: v[i] for c, v in columns.items()}
        for i, (name, record_path, _) in zip(hits, files, strict=True)
    ]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    columns = {k: [r.get(k, math.nan) for r in rows] for k in keys}
    _write_cache(cache_path, [f[0] for f in files], [f[2] for f in files], columns)
    return columns_to_frame(columns)
