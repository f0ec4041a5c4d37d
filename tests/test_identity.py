"""Run identity: the id hashes the fully resolved spec and the source of the run's methods."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdbench.config import load_suite
from kdbench.provenance import method_files
from kdbench.registry import METHODS
from tests.suites import tiny

ROOT = Path(__file__).resolve().parents[1]

BASE = tiny(name="ids", methods=["none", "kd", "cwd", "dwld", "lix"],
            train={"steps": 3, "batch_size": 4})


def ids(tmp_path: Path, name: str, **changes: object) -> dict[str, str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, **changes}))
    suite = load_suite(path)
    return {s.method: s.id for s in suite.students} | {"teacher": suite.teachers[0].id}


def test_two_spellings_of_kd_have_one_id(tmp_path: Path) -> None:
    short = ids(tmp_path, "a", methods=["kd"])["kd"]
    assert ids(tmp_path, "b", methods=[{"kd": {"kd": {"tau": 1.0}}}])["kd"] == short
    assert ids(tmp_path, "c", methods=[{"kd": {"kd": {"tau": 1}}}])["kd"] == short
    assert ids(tmp_path, "d", methods={"kd": {"kd": {"weight": 1.0, "tau": 1.0}}})["kd"] == short
    assert ids(tmp_path, "e", methods=[{"kd": {"kd": {"tau": 2.0}}}])["kd"] != short


def test_an_explicit_default_data_set_option_keeps_the_teacher_id(tmp_path: Path) -> None:
    plain = ids(tmp_path, "a")
    datasets = {"synthdrive": {**BASE["datasets"]["synthdrive"], "seed": 0, "modality": "depth"}}
    explicit = ids(tmp_path, "b", datasets=datasets)
    assert explicit == plain
    datasets["synthdrive"]["seed"] = 1
    assert ids(tmp_path, "c", datasets=datasets)["teacher"] != plain["teacher"]


def test_the_stored_config_is_fully_resolved(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "methods": ["kd"]}))
    kd = load_suite(path).students[0]
    config = kd.to_dict()
    assert config["method_terms"] == [["kd", {"reduction": "all", "tau": 1.0, "weight": 1.0}]]
    assert config["dataset_options"]["seed"] == 0 and config["dataset_options"]["modality"]
    assert len(config["code"]) == 16


def test_lix_reads_the_files_of_its_two_halves() -> None:
    names = {p.name for p in method_files(METHODS.get("lix"))}
    assert {"lix.py", "dwld.py", "arfd.py"} <= names
    assert {p.name for p in method_files(METHODS.get("kd"))} == {"kd.py"}


IDS_SCRIPT = """
import json, sys
from kdbench.config import load_suite
suite = load_suite(sys.argv[1])
print(json.dumps({s.method: s.id for s in suite.runs}))
"""


def _ids_with_methods(tmp_path: Path, methods: Path, suite: Path) -> dict[str, str]:
    """Run ids of ``suite`` in a fresh process importing ``methods`` from the given copy."""
    env = {**os.environ, "PYTHONPATH": f"{methods.parent}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-c", IDS_SCRIPT, str(suite)],
        env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    return json.loads(out.stdout)


@pytest.mark.slow
def test_changing_a_method_default_changes_only_that_methods_ids(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(BASE))
    copies = {}
    for label, file, old, new in [
        ("same", None, None, None),
        ("kd", "kd.py", "        tau: float = 1.0,", "        tau: float = 2.0,"),
        ("dwld", "dwld.py", "        tau: Temperature = 4.0,", "        tau: Temperature = 3.0,"),
    ]:
        copy = tmp_path / label / "methods"
        shutil.copytree(ROOT / "methods", copy, ignore=shutil.ignore_patterns("__pycache__"))
        if file is not None:
            text = (copy / file).read_text()
            assert old in text
            (copy / file).write_text(text.replace(old, new, 1))
        copies[label] = _ids_with_methods(tmp_path, copy, suite)
    same = copies["same"]
    assert same == ids(tmp_path, "here")
    changed = {
        label: {m for m in same if copies[label][m] != same[m]} for label in ("kd", "dwld")
    }
    assert changed["kd"] == {"kd"}
    assert changed["dwld"] == {"dwld", "lix"}  # LIX imports DWLD
