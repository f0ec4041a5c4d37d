"""The ``table`` and ``report`` subcommands: wiring, outputs, user errors, import cost."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kdbench.errors import KdbenchError
from kdbench.report import summary_table
from kdbench.report.commands import add_commands
from tests.report.records import demo_records, record, teacher_id, write


def _run(*argv: str) -> int:
    """Parse ``argv`` with the subcommands and run the chosen one."""
    parser = argparse.ArgumentParser(prog="kdbench")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def _suite(root: Path, suite: str = "demo") -> list[dict]:
    """2 data sets x 3 methods x 2 seeds with teachers, histories and per-class IoU."""
    recs = []
    for dataset in ("kitti", "vkitti2"):
        for seed in range(2):
            history = [{"step": 10 * i, "loss": 2.0 / (i + 1)} for i in range(4)]
            recs.append(record("teacher", seed, 80.0 + seed, dataset=dataset, suite=suite,
                               history=history, per_class={"road": 90.0, "car": 70.0}))
            for j, method in enumerate(("none", "kd", "cwd")):
                history = [{"step": 10 * i, "loss": (3.0 + j) / (i + 1)} for i in range(4)]
                history.append({"step": 40, "eval": {"miou": 70.0}})
                recs.append(record(
                    method, seed, 70.0 + j + 0.5 * seed, dataset=dataset, suite=suite,
                    teacher=None if method == "none" else teacher_id(dataset, seed=seed,
                                                                     suite=suite),
                    history=history, per_class={"road": 80.0 + j, "car": 60.0 + seed},
                ))
    return recs


def test_table_writes_each_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = write(tmp_path / "results", demo_records())
    assert _run("table", str(results), "--gap", "--power", "1") == 0
    out = capsys.readouterr().out
    assert "| Method | kitti / resnet18 | Δ | gap (%) |" in out and "Seeds needed" in out
    csv = tmp_path / "t" / "table.csv"
    assert _run("table", str(results), "--format", "csv", "--out", str(csv), "--ranks") == 0
    df = pd.read_csv(csv)
    assert set(df["method"]) == {"teacher", "none", "kd", "cwd", "lix"}
    tex = tmp_path / "table.tex"
    assert _run("table", str(results), "--format", "latex", "--out", str(tex), "--metric",
                "per_class", "--cell", "mean") == 0
    assert tex.read_text().count(r"\begin{table}") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metric", "nope"], "unknown metric"),
        (["--rows", "method", "--cols", "colour"], "unknown axis"),
        (["--format", "xml"], "unknown format"),
        (["--where", "method"], "AXIS=VALUE"),
        (["--power", "0"], "--power"),
        (["--test", "bayes"], "needs --rope"),
        (["--rope", "0.5"], "needs --rope"),
        (["--test", "bayes", "--rope", "-1"], "R >= 0"),
        (["--aggregate", "median"], "unknown aggregate"),
    ],
)
def test_table_user_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    results = write(tmp_path / "results", demo_records())
    with pytest.raises(KdbenchError, match=message):
        _run("table", str(results), *argv)


def test_table_without_records_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(KdbenchError, match="no run records"):
        _run("table", str(tmp_path))


def test_report_writes_tables_figures_and_summary(tmp_path: Path) -> None:
    results = write(tmp_path / "results", _suite(tmp_path))
    out = tmp_path / "report"
    assert _run("report", str(results), "--out", str(out), "--metrics", "miou,mfsc") == 0
    for name in ("miou.md", "miou.tex", "miou.csv", "mfsc.md", "cd_miou.png", "cd_miou.pdf",
                 "per_class.md", "per_class.tex", "per_class.csv", "per_class_0.png",
                 "curves_0.png", "curves_1.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    assert "![critical-difference diagram](cd_miou.png)" in report
    assert "| Method | kitti / resnet18 |" in report
    assert "Friedman" in report and "Seeds needed" in report
    assert "All runs are complete." in report


def test_report_splits_suites_and_lists_failed_runs(tmp_path: Path) -> None:
    recs = _suite(tmp_path, "alpha") + _suite(tmp_path, "beta")
    for rec in recs:  # fewer figures: no curves, no per-class bars
        rec["history"] = []
        rec["metrics"]["per_class_iou"] = {}
    recs.append(record("lix", 0, None, suite="beta", status="failed", error="CUDA OOM"))
    results = write(tmp_path / "results", recs)
    out = tmp_path / "report"
    assert _run("report", str(results), "--out", str(out), "--metrics", "miou") == 0
    report = (out / "report.md").read_text()
    assert "## Suite alpha" in report and "## Suite beta" in report
    assert (out / "alpha_miou.md").is_file() and (out / "beta_cd_miou.png").is_file()
    assert "CUDA OOM" in report and "failed" in report


def test_summary_table_restricts_to_the_given_runs(tmp_path: Path) -> None:
    recs = demo_records()
    results = write(tmp_path / "results", recs)
    ids = [r["id"] for r in recs if r["axes"]["method"] in ("teacher", "none", "kd")]
    text = summary_table(results, ids)
    assert "| kd |" in text and "cwd" not in text
    assert summary_table(results, []).startswith("(no results table:")


def test_importing_the_commands_loads_no_heavy_library() -> None:
    code = ("import sys, kdbench.report.commands; "
            "print(sorted(m for m in ('pandas', 'scipy', 'matplotlib', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        _run("table", "--help")
    text = capsys.readouterr().out
    for option in ("--metric", "--rows", "--cols", "--format", "--gap", "--test", "--alpha",
                   "--cell", "--power", "--ranks", "--where"):
        assert option in text
