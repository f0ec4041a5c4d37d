"""The table model on hand-made records with known answers (see records.demo_records)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from kdbench.errors import KdbenchError
from kdbench.report import load_results
from kdbench.report.cells import stats
from kdbench.report.cells.tables import Table, TableSpec, build_tables
from kdbench.report.records.cache import CACHE_NAME
from kdbench.report.records.frame import read_records, records_to_frame
from tests.report.records import KITTI, TEACHERS, demo_records, record, teacher_id, write


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder holding the demo records."""
    return write(tmp_path / "results", demo_records())


def _cell(table: Table, method: str, column: tuple[str, ...]):
    """The cell of ``method`` in the column keyed ``column``."""
    ri = next(i for i, r in enumerate(table.rows) if table.method(r) == method)
    ci = next(i for i, c in enumerate(table.columns) if c.key == column)
    return table.cells[ri, ci]


KITTI_COL = ("kitti", "resnet18")
VKITTI_COL = ("vkitti2", "resnet18")


def _table(results: Path, **options) -> Table:
    """The single table of ``options`` over the results folder."""
    (table,) = build_tables(load_results(results), TableSpec(**options))
    return table


def test_load_results_has_one_row_per_run_and_the_documented_columns(results: Path) -> None:
    df = load_results(results)
    assert len(df) == len(demo_records())
    for column in ["id", "suite", "kind", "status", "dataset", "student", "method", "seed",
                   "teacher", "miou", "mfsc", "pixel_acc", "iou.road", "iou.sky", "wall_time_s",
                   "step_time_s", "peak_memory_mb", "extra_params"]:
        assert column in df.columns
    kd0 = df[(df.method == "kd") & (df.seed == 0) & (df.dataset == "kitti")].iloc[0]
    assert kd0.miou == KITTI["kd"][0] and kd0["iou.road"] == KITTI["kd"][0] + 10
    assert kd0.teacher == teacher_id(seed=0)
    failed = df[df.status == "failed"].iloc[0]
    assert math.isnan(failed.miou) and failed.error == "RuntimeError: boom"
    assert df[df.dataset == "vkitti2"]["iou.sky"].isna().all()


def test_load_results_cache_follows_changed_records(results: Path) -> None:
    first = load_results(results)
    assert (results / CACHE_NAME).is_file()
    assert load_results(results).equals(first)  # every row from the cache
    assert records_to_frame(read_records(results)).equals(first)  # the report's way
    changed = record("none", 0, 55.5)
    write(results, [changed])  # the store replaces record.json by a rename
    again = load_results(results)
    assert again.loc[again.id == changed["id"], "miou"].item() == 55.5
    assert len(again) == len(first)
    (results / CACHE_NAME).write_text("{not json")
    assert load_results(results).equals(again)
    (results / CACHE_NAME).write_text(json.dumps({"version": -1, "runs": {}}))
    assert load_results(results).equals(again)


def test_cells_are_mean_and_sample_std_over_seeds(results: Path) -> None:
    table = _table(results)
    for method, values in KITTI.items():
        cell = _cell(table, method, KITTI_COL)
        assert cell.n == cell.expected == 3
        assert cell.mean == pytest.approx(np.mean(values))
        assert cell.std == pytest.approx(np.std(values, ddof=1))


def test_teacher_reference_is_the_teachers_the_column_used(results: Path) -> None:
    table = _table(results)
    teacher = _cell(table, "teacher", KITTI_COL)
    assert teacher.n == 2  # the seed-9 teacher is not used by any student: left out
    assert teacher.mean == pytest.approx((TEACHERS[0] + TEACHERS[1]) / 2)
    fallback = _cell(table, "teacher", VKITTI_COL)  # no student names a teacher there
    assert fallback.n == 1 and fallback.mean == 90.0


def test_delta_and_gap_share(results: Path) -> None:
    table = _table(results, gap=True)
    base, kd, cwd = (np.mean(KITTI[m]) for m in ("none", "kd", "cwd"))
    t = (TEACHERS[0] + TEACHERS[1]) / 2
    assert _cell(table, "kd", KITTI_COL).delta == pytest.approx(kd - base)
    assert _cell(table, "kd", KITTI_COL).gap == pytest.approx(100 * (kd - base) / (t - base))
    assert _cell(table, "cwd", KITTI_COL).gap == pytest.approx(100 * (cwd - base) / (t - base))
    assert _cell(table, "teacher", KITTI_COL).delta == pytest.approx(t - base)
    assert _cell(table, "none", KITTI_COL).delta is None
    vk = _cell(table, "kd", VKITTI_COL)
    assert vk.gap == pytest.approx(100 * (63 - 61) / (90 - 61))


def test_gap_share_is_undefined_when_the_teacher_is_not_better(tmp_path: Path) -> None:
    recs = [record("teacher", 0, 60.0)]
    recs += [record("none", s, 70.0 + s) for s in range(2)]
    recs += [record("kd", s, 71.0 + s, teacher=teacher_id()) for s in range(2)]
    table = _table(write(tmp_path, recs), gap=True)
    assert _cell(table, "kd", KITTI_COL).gap is None
    assert _cell(table, "kd", KITTI_COL).delta == pytest.approx(1.0)


def test_significance_is_a_paired_test_with_holm_over_the_column(results: Path) -> None:
    table = _table(results)
    p = {m: sps.ttest_rel(KITTI[m], KITTI["none"]).pvalue for m in ("kd", "cwd")}
    small, large = sorted(p.values())
    holm = {m: (2 * v if v == small else max(2 * small, v)) for m, v in p.items()}
    for method in ("kd", "cwd"):
        cell = _cell(table, method, KITTI_COL)
        assert cell.p == pytest.approx(p[method], rel=1e-10)
        assert cell.p_holm == pytest.approx(holm[method], rel=1e-10)
        expected = (1 if method == "kd" else -1) if holm[method] <= 0.05 else 0
        assert cell.mark == expected
    assert _cell(table, "kd", KITTI_COL).mark == 1  # +3 on every seed
    assert _cell(table, "cwd", KITTI_COL).mark == -1  # about −1 on every seed
    lix = _cell(table, "lix", KITTI_COL)
    assert math.isnan(lix.p) and lix.mark == 0  # a single paired seed is not tested
    strict = _table(results, alpha=1e-4)
    assert _cell(strict, "kd", KITTI_COL).mark == 0


def test_wilcoxon_option_uses_the_signed_rank_test(results: Path) -> None:
    cell = _cell(_table(results, test="wilcoxon"), "kd", KITTI_COL)
    assert cell.p == pytest.approx(sps.wilcoxon(KITTI["kd"], KITTI["none"]).pvalue)
    assert cell.mark == 0  # 3 seeds: the smallest possible p is 0.25


def test_best_bold_second_underlined_on_displayed_values(results: Path) -> None:
    table = _table(results)
    # displayed: kd 74.1 (74.07), lix 74.1 (one seed) tie for best; baseline 71.0 second
    assert _cell(table, "kd", KITTI_COL).place == 1
    assert _cell(table, "lix", KITTI_COL).place == 1
    assert _cell(table, "none", KITTI_COL).place == 2
    assert _cell(table, "cwd", KITTI_COL).place == 0
    assert _cell(table, "teacher", KITTI_COL).place == 0  # never ranked
    finer = _table(results, decimals=2)  # 74.07 < 74.10: the tie is broken
    assert _cell(finer, "lix", KITTI_COL).place == 1
    assert _cell(finer, "kd", KITTI_COL).place == 2
    assert _cell(finer, "none", KITTI_COL).place == 0


def test_lower_is_better_metrics_rank_the_other_way(tmp_path: Path) -> None:
    recs = [record(m, s, 70.0) for m in ("none", "kd", "cwd") for s in range(2)]
    for rec, t in zip(recs, [0.3, 0.3, 0.1, 0.1, 0.2, 0.2], strict=True):
        rec["timing"]["step_time_s"] = t
    table = _table(write(tmp_path, recs), metric="step_time_s", decimals=2)
    assert [_cell(table, m, KITTI_COL).place for m in ("kd", "cwd", "none")] == [1, 2, 0]


def test_failed_and_missing_runs_are_shown_not_averaged(results: Path) -> None:
    table = _table(results)
    lix = _cell(table, "lix", KITTI_COL)
    assert lix.n == 1 and lix.expected == 3 and lix.mean == 74.1
    assert lix.failed == 1 and lix.missing == 1
    lix_failed = record("lix", 1, None, status="failed")["id"]
    (label, note), = [(lab, text) for lab, text in table.notes if lab == lix.note]
    assert f"seed 1 failed (run {lix_failed}: RuntimeError: boom)" in note
    assert "seed 2 has no record" in note and note.startswith("2 of 3 seeds")
    absent = _cell(table, "cwd", VKITTI_COL)
    assert absent.n == 0 and absent.empty == "missing" and absent.missing == 2


def test_running_runs_are_labelled(tmp_path: Path) -> None:
    recs = [record("none", s, 70.0 + s) for s in range(2)]
    recs += [record("kd", s, None, status="running") for s in range(2)]
    cell = _cell(_table(write(tmp_path, recs)), "kd", KITTI_COL)
    assert cell.empty == "running" and cell.running == 2


def test_ci_cells_are_the_t_interval(results: Path) -> None:
    cell = _cell(_table(results, cell="ci"), "kd", KITTI_COL)
    assert cell.ci == stats.t_ci(KITTI["kd"])
    assert cell.ci[0] <= cell.mean <= cell.ci[1]


def test_bootstrap_cells_only_from_twenty_seeds(results: Path, tmp_path: Path) -> None:
    few = _cell(_table(results, cell="bootstrap", resamples=2000), "kd", KITTI_COL)
    assert few.n < stats.BOOTSTRAP_MIN_N and few.ci is None
    values = [70.0 + 0.1 * s for s in range(20)]
    recs = [record("none", s, v) for s, v in enumerate(values)]
    recs += [record("kd", s, v + 1) for s, v in enumerate(values)]
    many = _cell(_table(write(tmp_path, recs), cell="bootstrap", resamples=2000), "kd", KITTI_COL)
    assert many.ci == stats.bootstrap_ci([v + 1 for v in values], resamples=2000)


def test_per_class_tables_one_per_column_with_classes_as_columns(
    results: Path, tmp_path: Path
) -> None:
    tables = build_tables(load_results(results), TableSpec(metric="per_class"))
    assert [t.title for t in tables] == ["kitti / resnet18", "vkitti2 / resnet18"]
    kitti, vkitti = tables
    assert [c.key for c in kitti.columns] == [("road",), ("sky",)]
    assert [c.key for c in vkitti.columns] == [("road",)]  # sky is null in every vkitti2 run
    assert _cell(kitti, "kd", ("road",)).mean == pytest.approx(np.mean(KITTI["kd"]) + 10)
    assert not kitti.show_delta
    recs = [record("none", s, 70.0, per_class={"sky": 50.0}) for s in range(2)]
    recs += [record("kd", s, 70.0, per_class={"sky": None}) for s in range(2)]
    (table,) = build_tables(load_results(write(tmp_path / "r", recs)), TableSpec("per_class"))
    sky = _cell(table, "kd", ("sky",))
    assert sky.n == 0 and sky.empty == "n/a" and "seeds 0, 1 have null values" in sky.problems
    iou = _table(results, metric="iou.road")
    assert _cell(iou, "none", KITTI_COL).mean == pytest.approx(81.0)


def test_rows_can_hold_more_axes_than_the_method(results: Path) -> None:
    table = _table(results, rows=("student", "method"), cols=("dataset",))
    assert ("resnet18", "kd") in table.rows and ("resnet18", "teacher") in table.rows
    ri = table.rows.index(("resnet18", "kd"))
    assert table.cells[ri, 0].mean == pytest.approx(np.mean(KITTI["kd"]))


def test_where_filters_but_keeps_the_baseline(results: Path) -> None:
    table = _table(results, where=(("method", ("kd",)), ("dataset", ("kitti",))))
    assert {table.method(r) for r in table.rows} == {"teacher", "none", "kd"}
    assert [c.key for c in table.columns] == [KITTI_COL]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metric": "accuracy"}, "unknown metric 'accuracy'"),
        ({"rows": ("methods",)}, "unknown axis 'methods'"),
        ({"rows": ("dataset",), "cols": ("student",)}, "must include 'method'"),
        ({"cols": ("student",)}, "differ in dataset"),
        ({"cell": "box"}, "unknown cell format"),
        ({"test": "anova"}, "unknown test"),
        ({"alpha": 1.5}, "--alpha"),
        ({"where": (("colour", ("red",)),)}, "unknown axis"),
        ({"where": (("dataset", ("cityscapes",)),)}, "no student runs"),
    ],
)
def test_user_errors(results: Path, options: dict, message: str) -> None:
    with pytest.raises(KdbenchError, match=message):
        build_tables(load_results(results), TableSpec(**options))


def test_two_complete_runs_of_one_seed_are_an_error(tmp_path: Path) -> None:
    a = record("none", 0, 70.0)
    b = record("none", 0, 71.0, suite="other")
    b["suite"] = "demo"  # same axes, different run id
    with pytest.raises(KdbenchError, match="several complete runs"):
        build_tables(load_results(write(tmp_path, [a, b])), TableSpec())
    b["status"] = "failed"  # a complete and a failed run of one seed: the complete one counts
    table = _table(write(tmp_path / "second", [a, b]))
    assert _cell(table, "none", KITTI_COL).mean == 70.0


def test_an_empty_results_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KdbenchError, match="no run records"):
        load_results(tmp_path)
    with pytest.raises(KdbenchError, match="does not exist"):
        load_results(tmp_path / "nowhere")
