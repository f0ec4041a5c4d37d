"""Writing files of the run store: unique temp file, one file mode, atomic rename, clear errors.

Every file of a results folder (records, histories, weights, checkpoints, leases) is written to
a unique temporary name beside its target (``mkstemp``: two processes never share one), given
:data:`FILE_MODE`, flushed to disk and renamed over the target, so a reader sees the old file or
the new one, never half of one. On any failure the temporary file is removed. An ``OSError``
(no permission, a full disk, a read-only file system) becomes a :class:`StorageError`: one line
naming the path and the cause, which the CLI prints before exiting with code 2.
"""

from __future__ import annotations

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


class StorageError(KdbenchError):
    """The results folder cannot be written (permission, full disk, read-only file system)."""


def storage_error(path: Path, exc: OSError) -> StorageError:
    return StorageError(f"{path}: cannot write: {exc.strerror or exc}")


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
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise storage_error(path, exc) from None
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
