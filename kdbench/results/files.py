"""Writing files of the run store: unique temp file, one file mode, atomic rename, clear errors.

Every file of a results folder (records, histories, weights, checkpoints, leases) is written to
a unique temporary name beside its target (``mkstemp``: two processes never share one), given
:data:`FILE_MODE`, flushed to disk and renamed over the target, so a reader sees the old file or
the new one, never half of one. On any failure the temporary file is removed. An ``OSError``
(no permission, a full disk, a read-only file system) becomes a :class:`StorageError`: one line
naming the path and the cause, which the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kdbench.errors import KdbenchError

FILE_MODE = 0o644
"""Mode of every file in a results folder: readable by the group (folders shared on a cluster)."""

TEMP_SUFFIX = ".tmp"

FULL_BELOW = 1 << 20
"""Bytes left on a file system under which a failed write counts as a full disk."""
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class StorageError(KdbenchError):
    """The results folder cannot be written (permission, full disk, read-only file system)."""


def storage_error(path: Path, exc: OSError) -> StorageError:
    if exc.errno in NO_SPACE:
        return StorageError(f"{path}: cannot write: no space left on device")
    return StorageError(f"{path}: cannot write: {exc.strerror or exc}")


def disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether the failed write ``exc`` into ``folder`` met a full disk: ``ENOSPC`` or
    ``EDQUOT`` in its chain (``__cause__`` and ``__context__``), or, where ``exc`` is no
    ``OSError`` (which carries its own errno), less than :data:`FULL_BELOW` bytes available on
    ``folder``'s file system."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, OSError) and link.errno in NO_SPACE:
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    if isinstance(exc, OSError):
        return False
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < FULL_BELOW


def _write_error(path: Path, exc: BaseException) -> StorageError | None:
    """The :class:`StorageError` a failed write of ``path`` is, or None (not a storage
    problem: a bug or an interrupt, raised as it is)."""
    if isinstance(exc, Exception) and not isinstance(exc, KdbenchError):
        if disk_full(exc, path.parent):
            return storage_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    return storage_error(path, exc) if isinstance(exc, OSError) else None


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """An open binary file that becomes ``path`` when the block ends without an exception."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise storage_error(path.parent, exc) from None
    try:
        with open(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        error = _write_error(path, exc)  # before the partial file goes: it fills the disk
        Path(tmp).unlink(missing_ok=True)
        if error is not None:
            raise error from None
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see the module docstring)."""
    text = json.dumps(obj, indent=1, allow_nan=False, default=str).encode()
    with atomic_file(path) as f:
        f.write(text)


def check_writable(folder: Path) -> None:
    """Raise a :class:`StorageError` now if ``folder`` cannot be created or written."""
    with atomic_file(Path(folder) / ".write-test") as f:
        f.write(b"ok\n")
    (Path(folder) / ".write-test").unlink(missing_ok=True)


def remove_temp_files(folder: Path) -> None:
    """Remove temporary files that killed writers left in ``folder`` (call it holding the
    folder's lease)."""
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
