"""A real small file system for the full-disk tests: a size-limited tmpfs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_file_system(folder: Path, size: int) -> Iterator[Path]:
    """A real tmpfs of ``size`` bytes (rounded up to pages) mounted on ``folder``; skips the test
    where this machine does not allow mounting (CI runs as root and does)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True, text=True,
    ) if shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        reason = mounted.stderr.strip() if mounted is not None else "no mount command"
        pytest.skip(f"cannot mount a {size}-byte tmpfs here (root only): {reason}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
