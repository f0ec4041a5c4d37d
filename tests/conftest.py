"""Test-wide fixtures: a private resolved-suite cache, and empty data roots for shipped suites;
hypothesis's profiles; ``slurm`` tests are ``slow`` tests; tests marked ``cuda`` are skipped where
torch sees no CUDA device.

Property-based tests run under the ``ci`` profile unless ``--hypothesis-profile`` names another:
derandomised (each test draws the same examples on every run, so CI cannot fail at random) and
without the example database. ``--hypothesis-profile=explore --hypothesis-seed=N`` draws fresh
examples, from seed ``N`` if given (``ci`` ignores ``--hypothesis-seed``, being derandomised).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

REAL_DATA_SETS = {
    "kitti": (), "vkitti2": (), "cityscapes": (), "deliver": (), "ade20k": (), "nuimages": (),
    "nyudv2": ("train.txt", "test.txt"), "sunrgbd": ("train.txt", "test.txt"),
    "mfnet": ("train.txt", "test.txt"), "voc": ("train_aug.txt", "val.txt"),
}
"""The real data sets' folders, with the list files their suites check when they load."""

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, print_blob=True)


def pytest_configure(config: pytest.Config) -> None:
    """Select the ``ci`` hypothesis profile unless the command line names one."""
    if not config.getoption("hypothesis_profile", default=None):
        settings.load_profile("ci")


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
    for folder, files in REAL_DATA_SETS.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            (root / folder / name).touch()
    monkeypatch.setenv("KDBENCH_DATA", str(root))
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every ``slurm`` test ``slow`` too (each trains runs through a real cluster), and skip
    the ``cuda`` tests without a GPU (``pytest -m cuda`` selects them where there is one)."""
    import torch

    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("slurm") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        if skip is not None and "cuda" in item.keywords:
            item.add_marker(skip)
