"""A full disk is recognised whichever writer met it, on a real small file system: the errno in
the exception's chain, or the free space left when the writer says it in its own words."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from kdbench.results.files import FULL_BELOW, StorageError, atomic_file, disk_full
from tests.results.small_disk import small_file_system

SIZE = 300 * 1024


def fill(folder: Path) -> None:
    """Write into ``folder`` until its file system is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("writer", ["bytes", "torch.save"])
def test_a_write_that_fills_the_disk_is_one_storage_error_and_leaves_nothing(
    tmp_path: Path, writer: str
) -> None:
    with small_file_system(tmp_path / "disk", SIZE) as disk:
        target = disk / "run" / "model.pt"
        with pytest.raises(StorageError) as failed, atomic_file(target) as f:
            if writer == "bytes":
                f.write(b"\1" * 2 * SIZE)
            else:
                torch.save({"w": torch.zeros(SIZE // 2)}, f)  # 2 x SIZE bytes of float32
        print(f"{writer} on a {SIZE}-byte tmpfs: {failed.value}")
        assert str(failed.value) == f"{target}: cannot write: no space left on device"
        assert os.listdir(target.parent) == []  # the partial file removed


def test_the_free_space_or_the_errno_in_the_chain_says_full(tmp_path: Path) -> None:
    def chained(context: BaseException) -> RuntimeError:
        """torch.save's error, raised while handling ``context`` (as its writer does)."""
        exc = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
        exc.__context__ = context
        return exc

    roomy = tmp_path / "roomy"
    roomy.mkdir()
    stat = os.statvfs(roomy)
    assert stat.f_bavail * stat.f_frsize > FULL_BELOW  # the test's own folder has room
    no_space = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert disk_full(chained(no_space), roomy)
    assert not disk_full(chained(ValueError("bad pickle")), roomy)
    assert not disk_full(RuntimeError("unexpected pos"), roomy)
    with small_file_system(tmp_path / "disk", SIZE) as disk:
        fill(disk)
        assert disk_full(RuntimeError("unexpected pos"), disk)  # nothing in the chain: the space
        assert not disk_full(PermissionError(errno.EACCES, "denied"), disk)  # its errno says
