"""The quickstart has geometric knowledge to distil: its RGB-X teacher clearly beats the student.

Runs the shipped quickstart recipe on one seed with the student baseline only (about a minute
on 2 CPU cores); the README reports the same comparison over 3 seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdbench.config import load_suite
from kdbench.launch.local import LocalExecutor
from kdbench.train.run import train_run

QUICKSTART = Path(__file__).resolve().parents[2] / "suites" / "quickstart.yaml"


@pytest.mark.slow
def test_rgbx_teacher_beats_the_rgb_student_by_5_miou(tmp_path: Path) -> None:
    suite = load_suite(QUICKSTART, ["seeds=[0]", "methods=[none]"])
    records = LocalExecutor().run(suite.runs, tmp_path, train_run)
    teacher, student = (next(r for r in records if r["kind"] == kind)
                        for kind in ("teacher", "student"))
    assert teacher["status"] == student["status"] == "complete"
    t, s = teacher["metrics"]["miou"], student["metrics"]["miou"]
    assert t - s >= 5.0, f"teacher {t:.2f} vs student {s:.2f}"
