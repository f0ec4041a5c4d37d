"""Test-wide fixtures: a private resolved-suite cache, and empty data roots for shipped suites;
tests marked ``cuda`` are skipped where torch sees no CUDA device."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_DATA_SETS = ("kitti", "vkitti2", "cityscapes")


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


@pytest.fixture
def shipped_data_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty data roots for the real data sets under ``$KDBENCH_DATA``, so that the shipped
    suites (which check their data folders when they load) can be validated without the data."""
    root = tmp_path / "data"
    for folder in REAL_DATA_SETS:
        (root / folder).mkdir(parents=True)
    monkeypatch.setenv("KDBENCH_DATA", str(root))
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``cuda`` tests without a GPU (``pytest -m cuda`` selects them where there is)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
