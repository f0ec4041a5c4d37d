"""Budgets: step counts from FLOPs, seconds and the compute-matched baseline; end-to-end runs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from kdbench.config import MATCHED_BASELINE, load_suite
from kdbench.errors import KdbenchError
from kdbench.results.store import RunStore
from kdbench.train import budget
from kdbench.train.run import train_run

from .test_run import TINY

CIRKD = {"cirkd": {"cirkd": {"pixel_memory": 256, "region_memory": 64}}}
"""A row whose loss has a learnable projector (small queues keep the test fast)."""
MATCHED = {"none": {"budget": "match"}}
"""The methods entry of the compute-matched baseline (row ``none-matched``)."""


def never() -> float:
    raise AssertionError("calibrated although it needed not")


def test_a_flops_budget_buys_steps_in_inverse_proportion_to_their_cost(tmp_path: Path) -> None:
    f = 1_000_000
    cheap = budget.steps_for({"flops": f}, 1_000, never, tmp_path / "a.json")
    dear = budget.steps_for({"flops": f}, 4_000, never, tmp_path / "b.json")
    assert (cheap.steps, dear.steps) == (1000, 250)
    assert budget.steps_for({"flops": f}, 3_000, never, tmp_path / "c.json").steps == 333
    assert budget.steps_for({"flops": 10}, 3_000, never, tmp_path / "d.json").steps == 1
    assert budget.steps_for({"steps": 7}, 3_000, never, tmp_path / "e.json").steps == 7


def test_a_seconds_budget_is_calibrated_once_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "budgets" / "run.json"
    calls = []

    def calibrate() -> float:
        calls.append(1)
        return 0.25

    first = budget.steps_for({"seconds": 10}, 1, calibrate, path)
    again = budget.steps_for({"seconds": 10}, 1, calibrate, path)
    assert first.steps == again.steps == 40 and len(calls) == 1
    assert json.loads(path.read_text())["step_s"] == 0.25
    path.write_text("{broken")
    with pytest.raises(KdbenchError, match="run.json: unreadable budget calibration"):
        budget.steps_for({"seconds": 10}, 1, calibrate, path)


def test_the_matched_baseline_gets_the_flops_of_the_costliest_row(tmp_path: Path) -> None:
    rows = [["kd", [["kd", {}]]], ["cirkd", [["cirkd", {}]]]]
    match = {"match": {"budget": {"steps": 100}, "rows": rows}}
    resolved = budget.steps_for(match, 1_000, never, tmp_path / "m.json", lambda r: [1_500, 6_000])
    assert resolved.steps == 600 and resolved.detail["matched_to"] == "cirkd"
    under_flops = {"match": {"budget": {"flops": 5e5}, "rows": rows}}
    assert budget.steps_for(under_flops, 1_000, never, tmp_path / "f.json").steps == 500


def write_suite(tmp_path: Path, train: dict, **changes: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], **train}, **changes}))
    return path


def test_budget_keys_are_checked_with_their_path(tmp_path: Path) -> None:
    for bad in ({"flop": 3}, {"steps": 2.5}, {"seconds": -1}, {"steps": 1, "flops": 2}, []):
        with pytest.raises(KdbenchError, match=r"tiny.yaml: train.budget: "):
            load_suite(write_suite(tmp_path, {"budget": bad}))
    path = write_suite(tmp_path, {}, methods=["none", MATCHED])
    with pytest.raises(KdbenchError, match="methods.none.budget: match: no distillation method"):
        load_suite(path)


def test_train_steps_is_the_default_budget_and_a_list_is_an_axis(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, {"steps": 5}))
    assert {s.train["steps"] for s in suite.runs} == {5}
    assert all("budget" not in s.train for s in suite.runs)  # ids as before budgets existed
    suite = load_suite(
        write_suite(tmp_path, {"budget": [{"steps": 4}, {"flops": 1e9}]},
                    methods=["none", "kd", MATCHED])
    )
    (teacher,) = suite.teachers
    assert teacher.train["steps"] == 6 and "budget" not in teacher.train  # train.steps
    labels = sorted({(s.axes["budget"], s.method) for s in suite.students})
    assert labels == sorted(
        (b, m) for b in ("4 steps", "1e+09 FLOPs") for m in ("none", "kd", MATCHED_BASELINE)
    )
    matched = next(s for s in suite.students if s.method == MATCHED_BASELINE)
    kd_options = {"reduction": "all", "tau": 1.0, "weight": 1.0}  # resolved: every default
    assert matched.train["budget"]["match"]["rows"] == [["kd", [["kd", kd_options]]]]


@pytest.fixture(scope="module")
def flops_suite(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A tiny suite under a FLOPs budget: its teacher trained, its students not yet."""
    tmp = tmp_path_factory.mktemp("flops")
    path = write_suite(
        tmp, {"budget": {"flops": 6e9}}, methods=["none", "kd", CIRKD, MATCHED]
    )
    suite = load_suite(path)
    results = tmp / "results"
    (teacher,) = suite.teachers
    assert train_run(teacher, results)["status"] == "complete"
    return suite, results


@pytest.mark.slow
def test_under_a_flops_budget_a_costlier_method_trains_proportionally_fewer_steps(
    flops_suite,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    suite, results = flops_suite
    costs = {}
    for spec in suite.students:
        record = train_run(spec, results)
        assert record["status"] == "complete", record.get("traceback")
        costs[spec.method] = record["cost"]
    for method, cost in costs.items():
        per_step = cost["flops_per_step"]["total"]
        assert cost["steps"] == int(6e9 // per_step), method  # floor(F / c): F spent, not more
        assert len(RunStore(results).history(suite.students[0].id)) >= 1
    assert costs["cirkd"]["flops_per_step"]["total"] > costs["kd"]["flops_per_step"]["total"]
    assert costs["cirkd"]["steps"] < costs["kd"]["steps"] < costs["none"]["steps"]
    assert costs[MATCHED_BASELINE]["steps"] == costs["none"]["steps"]  # F is F for every row
    # a rerun in another folder (the teacher linked in) counts the same and trains the same
    cirkd = next(s for s in suite.students if s.method == "cirkd")
    other = tmp_path / "rerun"
    (other / "runs").mkdir(parents=True)
    os.symlink(RunStore(results).run_dir(cirkd.teacher_id), other / "runs" / cirkd.teacher_id)
    again = train_run(cirkd, other)
    assert again["cost"]["steps"] == costs["cirkd"]["steps"]
    assert again["metrics"] == RunStore(results).load(cirkd.id)["metrics"]


@pytest.mark.slow
def test_the_matched_baseline_trains_as_long_as_the_costliest_method_spends(
    tmp_path: Path,
    flops_suite,  # noqa: ANN001
) -> None:
    _, results = flops_suite
    suite = load_suite(
        write_suite(tmp_path, {"budget": {"steps": 4}}, methods=["none", "kd", CIRKD, MATCHED])
    )
    by_method = {s.method: s for s in suite.students}
    other = tmp_path / "results"
    (other / "runs").mkdir(parents=True)
    teacher_id = by_method["kd"].teacher_id  # the plain baseline reads no teacher
    os.symlink(RunStore(results).run_dir(teacher_id), other / "runs" / teacher_id)
    cirkd = train_run(by_method["cirkd"], other)["cost"]  # the costliest: teacher and a projector
    matched = train_run(by_method[MATCHED_BASELINE], other)["cost"]
    costliest = 4 * cirkd["flops_per_step"]["total"]
    assert matched["budget"]["matched_to"] == "cirkd"
    assert matched["steps"] == costliest // matched["flops_per_step"]["total"] > 4


@pytest.mark.slow
def test_a_seconds_budget_run_calibrates_once_and_a_rerun_trains_the_same_steps(
    tmp_path: Path,
    flops_suite,  # noqa: ANN001
) -> None:
    _, results = flops_suite
    suite = load_suite(write_suite(tmp_path, {"budget": {"seconds": 0.5}}, methods=["none", "kd"]))
    kd = next(s for s in suite.students if s.method == "kd")
    other = tmp_path / "results"
    (other / "runs").mkdir(parents=True)
    os.symlink(RunStore(results).run_dir(kd.teacher_id), other / "runs" / kd.teacher_id)
    first = train_run(kd, other)
    calibration = json.loads((other / "budgets" / f"{kd.id}.json").read_text())
    steps = max(1, math.floor(0.5 / calibration["step_s"]))
    assert first["cost"]["steps"] == calibration["steps"] == steps
    RunStore(other).record_path(kd.id).unlink()  # the run is redone from scratch ...
    again = train_run(kd, other)
    assert again["cost"]["steps"] == first["cost"]["steps"]  # ... with the recorded calibration
    assert again["metrics"] == first["metrics"]
