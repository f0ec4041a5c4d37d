"""The resolved configs and run ids of every suite under ``suites/`` (and of a few variants that
exercise tuning trials and the launch section), as JSON: the golden file the config tests compare
against (``tests/golden/resolved_suites.json``, written before the config split).

    python tests/golden/resolve_suites.py > tests/golden/resolved_suites.json
    python tests/golden/resolve_suites.py --add    # suites added since: appended, others kept

Suites on real data sets resolve without their data: each folder data set's root check is
replaced by one that accepts any root (the root is not part of a run's config), and
``$KDBENCH_DATA`` is a folder of empty roots with the list files the loaders read first.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]

VARIANTS: dict[str, list[str]] = {
    "quickstart+tune": ["tune.trials=2", "seeds=[0, 1]"],
    "fair+tune": ["tune.trials=2", "tune.split=0.25"],
}
"""Extra entries: ``<suite stem>+<name>`` -> the ``--set`` overrides applied to that suite."""


def entries() -> list[tuple[str, Path, list[str]]]:
    """(key, suite file, overrides) of every golden entry, suites in path order."""
    suites = sorted((ROOT / "suites").rglob("*.yaml"))
    out = [(str(p.relative_to(ROOT)), p, []) for p in suites]
    for key, overrides in VARIANTS.items():
        out.append((key, ROOT / "suites" / f"{key.split('+')[0]}.yaml", overrides))
    return out


def _empty_roots(base: Path) -> str:
    """Empty folders (with their list files) for every real data set under ``base``."""
    from tests.conftest import REAL_DATA_SETS

    for folder, files in REAL_DATA_SETS.items():
        (base / folder).mkdir(parents=True)
        for name in files:
            (base / folder / name).touch()
    return str(base)


def resolve(path: Path, overrides: list[str]) -> list[dict[str, Any]]:
    """``[{"id", "config"}]`` of every run of the suite in its order (plugin paths relative)."""
    from kdbench.config import load_suite
    from kdbench.data.loading import DataRoot

    with (
        tempfile.TemporaryDirectory() as data,
        mock.patch.object(DataRoot, "check_available", classmethod(lambda c, o: None)),
        mock.patch.dict(os.environ, {"KDBENCH_DATA": _empty_roots(Path(data))}),
    ):
        suite = load_suite(path, overrides)
    runs = []
    for spec in suite.runs:
        config = spec.to_dict()
        config["plugins"] = [[str(Path(p).relative_to(ROOT)), h] for p, h in config["plugins"]]
        runs.append({"id": spec.id, "config": config})
    return runs


def dumps(golden: dict[str, list[dict[str, Any]]]) -> str:
    """The golden JSON, one run per line."""
    blocks = [
        json.dumps(key) + ": [\n" + ",\n".join(json.dumps(run, sort_keys=True) for run in runs)
        + "\n]"
        for key, runs in sorted(golden.items())
    ]
    return "{\n" + ",\n".join(blocks) + "\n}\n"


GOLDEN = Path(__file__).with_name("resolved_suites.json")


def main() -> None:
    if sys.argv[1:] == ["--add"]:
        golden = json.loads(GOLDEN.read_text())
        for key, path, overrides in entries():
            golden.setdefault(key, resolve(path, overrides))
        GOLDEN.write_text(dumps(golden))
        return
    sys.stdout.write(dumps({key: resolve(path, o) for key, path, o in entries()}))


if __name__ == "__main__":
    main()
