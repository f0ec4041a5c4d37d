"""Every suite resolves to the configs and run ids recorded before the config package split
(``tests/golden/resolved_suites.json``, written by ``tests/golden/resolve_suites.py``).

A run's id moves only through its methods' source hash (``code``) when a method file is edited:
the configs are compared with ``code`` aside and every run id replaced by the run's position,
and the ids themselves wherever the run's ``code`` is the recorded one (teachers: always). The
keys added since are compared as the run id sees them (:func:`kdbench.config.spec.identity`:
at their identity defaults they are left out), and ``needs`` must say what the teacher and
trials already said. Suites added after the golden file was written are added to it when they
are (``resolve_suites.py --add``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdbench.config import RunSpec
from kdbench.config.spec import identity
from tests.golden.resolve_suites import entries, resolve

GOLDEN = json.loads((Path(__file__).parent / "golden" / "resolved_suites.json").read_text())


def _hashed(config: dict[str, Any]) -> dict[str, Any]:
    """What the run id hashes of a stored config (keys added since at their identity defaults
    left out, widened defaults as their earlier values), with ``code`` aside."""
    seen = identity(RunSpec.from_dict(config))
    return {k: v for k, v in seen.items() if k not in ("code", "needs")}


def _positional(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hashed configs with every run id (own, teacher, trials) as its index."""
    index = {run["id"]: f"run#{i}" for i, run in enumerate(runs)}
    text = json.dumps([_hashed(r["config"]) for r in runs])
    for run_id, position in index.items():
        text = text.replace(f'"{run_id}"', f'"{position}"')
    return json.loads(text)


@pytest.mark.parametrize("key,path,overrides", entries(), ids=[e[0] for e in entries()])
def test_suite_resolves_as_recorded(key: str, path: Path, overrides: list[str]) -> None:
    runs, golden = resolve(path, overrides), GOLDEN[key]
    for run in runs:
        config = run["config"]
        trials = (config["train"].get("tune") or {}).get("trials", [])
        assert config["needs"] == [config["teacher_id"]] * bool(config["teacher_id"]) + trials
    assert len(runs) == len(golden)
    assert _positional(runs) == _positional(golden)
    same_code = [(r["id"], g["id"]) for r, g in zip(runs, golden, strict=True)
                 if r["config"]["code"] == g["config"]["code"]]
    assert same_code, "at least the teachers keep their code hash"
    assert [r for r, _ in same_code] == [g for _, g in same_code]


def test_golden_covers_every_suite() -> None:
    assert {key for key, _, _ in entries()} == set(GOLDEN)
