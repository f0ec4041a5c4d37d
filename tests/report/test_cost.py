"""Cost columns, budget captions, rankings per budget and the cost figure of the report."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kdbench.cli import main
from kdbench.report import load_results
from kdbench.report.cells.cost import ranking
from kdbench.report.cells.tables import TableSpec

from .records import record, run_id, teacher_id, write

MIOU = {  # method -> budget -> mIoU per seed
    "none": {"100 steps": [40.0, 42.0], "5e+11 FLOPs": [41.0, 43.0]},
    "kd": {"100 steps": [44.0, 46.0], "5e+11 FLOPs": [42.0, 44.0]},
    "cirkd": {"100 steps": [47.0, 49.0], "5e+11 FLOPs": [40.0, 41.0]},
}
GFLOPS = {"none": 1.0, "kd": 2.5, "cirkd": 10.0}
"""FLOPs per step (1e9): the costlier the method, the fewer steps a FLOPs budget buys."""


def costed(method: str, seed: int, budget: str, miou: float) -> dict[str, Any]:
    rec = record(method, seed, miou, teacher=teacher_id(seed=seed))
    rec["id"] = run_id(method, seed, budget)
    rec["axes"]["budget"] = budget
    steps = 100 if budget.endswith("steps") else int(5e11 // (GFLOPS[method] * 1e9))
    rec["cost"] = {
        "flops_per_step": {"teacher_forward": 0, "student": int(GFLOPS[method] * 1e9), "loss": 0,
                           "total": int(GFLOPS[method] * 1e9)},
        "steps": steps,
        "flops": steps * GFLOPS[method] * 1e9,
        "step_s_median": 0.01 * GFLOPS[method],
        "device_hours": steps * 0.01 * GFLOPS[method] / 3600,
    }
    return rec


@pytest.fixture
def results(tmp_path: Path) -> Path:
    recs = [record("teacher", s, 60.0) for s in (0, 1)]
    for method, by_budget in MIOU.items():
        for budget, values in by_budget.items():
            recs += [costed(method, s, budget, v) for s, v in enumerate(values)]
    return write(tmp_path / "results", recs)


def test_table_cost_adds_the_mean_cost_of_each_cell(results: Path, capsys) -> None:  # noqa: ANN001
    argv = ["table", str(results), "--where", "budget=5e+11 FLOPs", "--cost"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Training budget per run: 5e+11 FLOPs." in out  # the main table's caption
    line = [x for x in out.splitlines() if x.startswith("| cirkd |")][-1]  # the cost table
    # cirkd: 50 steps of 10 GFLOPs = 0.5 TFLOPs; 0.1 s/step; 50 · 0.1 / 3600 device-hours
    assert line.rstrip(" |").split(" | ")[1:6] == ["50", "10.00", "0.500", "0.100", "0.0014"]
    assert main([*argv, "--format", "csv"]) == 0
    tidy = pd.read_csv(io.StringIO(capsys.readouterr().out))
    kd = tidy[tidy["method"] == "kd"].iloc[0]
    assert kd["steps"] == 200 and kd["gflops_per_step"] == pytest.approx(2.5)


def test_runs_of_several_budgets_are_never_mixed_in_one_cell(results: Path, capsys) -> None:  # noqa: ANN001
    assert main(["table", str(results)]) == 2
    assert "differ in budget" in capsys.readouterr().err
    assert main(["table", str(results), "--cols", "budget"]) == 0
    assert "Training budget per run as labelled" in capsys.readouterr().out


def test_rankings_follow_each_budget(results: Path) -> None:
    frame = load_results(results)
    steps = ranking(frame, TableSpec(where=(("budget", ("100 steps",)),)))
    flops = ranking(frame, TableSpec(where=(("budget", ("5e+11 FLOPs",)),)))
    assert steps["rank"].to_dict() == {"none": 3.0, "kd": 2.0, "cirkd": 1.0}
    assert flops["rank"].to_dict() == {"none": 2.0, "kd": 1.0, "cirkd": 3.0}
    assert flops.loc["cirkd", "mean"] == pytest.approx(40.5)
    assert flops.loc["kd", "tflops"] == pytest.approx(0.5)


def test_report_has_the_cost_table_both_rankings_and_the_cost_figure(
    results: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "### Budget: 100 steps" in text and "### Budget: 5e+11 FLOPs" in text
    assert "Rankings at equal steps and at equal compute" in text
    assert text.count("### Cost") == 2
    assert (out / "cost_miou.png").stat().st_size > 0
    assert (out / "rankings.tex").exists() and (out / "100_steps_cost.csv").exists()
