"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA_SETS = ("kitti", "vkitti2", "cityscapes")


@pytest.fixture
def shipped_data_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty data roots for the real data sets under ``$KDBENCH_DATA``, so that the shipped
    suites (which check their data folders when they load) can be validated without the data."""
    root = tmp_path / "data"
    for folder in REAL_DATA_SETS:
        (root / folder).mkdir(parents=True)
    monkeypatch.setenv("KDBENCH_DATA", str(root))
    return root
