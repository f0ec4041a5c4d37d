"""The shared tiny suite (``tests/suites.py``) is a valid suite, and each call a fresh copy."""

from __future__ import annotations

from pathlib import Path

import yaml

from kdbench.config import load_suite
from tests.suites import TINY, TRAIN, tiny


def test_the_tiny_suite_loads_as_one_teacher_and_its_two_students(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    suite = load_suite(path)
    assert len(suite.teachers) == 1
    assert sorted(s.method for s in suite.students) == ["kd", "none"]
    assert {s.train["steps"] for s in suite.students} == {TRAIN["steps"]}
    assert {s.dataset_options["train_samples"] for s in suite.runs} == {16}


def test_sections_replace_keys_and_samples_set_the_sample_counts() -> None:
    data = tiny((8, 4), name="other", device="cpu", train={"steps": 2})
    assert data["name"] == "other" and data["train"] == {"steps": 2}
    assert list(data)[-1] == "device"
    assert data["datasets"]["synthdrive"] == {"size": [32, 64], "train_samples": 8,
                                              "eval_samples": 4}


def test_each_call_is_a_copy_that_a_test_may_change() -> None:
    data = tiny()
    data["datasets"]["synthdrive"]["size"][0] = 1
    data["train"]["steps"] = 99
    assert TINY["datasets"]["synthdrive"]["size"] == [32, 64] and TINY["train"]["steps"] == 6
    assert tiny() == TINY
