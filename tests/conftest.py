"""Test-wide settings: the resolved-suite cache lives in a temporary folder, not ~/.cache."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_suite_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point ``$KDBENCH_CACHE`` (inherited by subprocesses) at a folder of this session."""
    old = os.environ.get("KDBENCH_CACHE")
    os.environ["KDBENCH_CACHE"] = str(tmp_path_factory.mktemp("suite-cache"))
    yield
    if old is None:
        os.environ.pop("KDBENCH_CACHE", None)
    else:
        os.environ["KDBENCH_CACHE"] = old
