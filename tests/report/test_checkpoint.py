"""``--checkpoint best``: each run's best evaluation by mIoU, captions and footnotes saying so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdbench.cli import main
from kdbench.report import load_results
from kdbench.report.cells.tables import TableSpec, build_tables
from kdbench.report.render.formats import render
from tests.report.records import record, write

FINAL = {"none": [70.0, 71.0, 72.0], "kd": [73.0, 74.0, 75.0]}
BEST = {"kd": [74.5, 73.0, None]}
"""kd's best periodic mIoU per seed: better than final on seed 0, worse on seed 1, none on 2."""


def _classes(miou: float, car_gap: float) -> dict[str, float]:
    """Per-class IoU of an evaluation: road at its mIoU, car ``car_gap`` points below."""
    return {"road": miou, "car": miou - car_gap}


def _records(best_classes: bool = True) -> list[dict]:
    """The teacher and runs of FINAL and BEST; a best evaluation keeps its per-class IoU
    (car 30 points below road, 20 in the final model) if ``best_classes``."""
    recs = [record("teacher", 0, 80.0, per_class=_classes(80.0, 20.0))]
    for method, values in FINAL.items():
        for seed, v in enumerate(values):
            rec = record(method, seed, v, per_class=_classes(v, 20.0))
            best = BEST.get(method, [None] * 3)[seed]
            if best is not None:
                rec["best_val"] = {"step": 100, "miou": best, "mfsc": best + 2,
                                   "pixel_acc": best + 10}
                if best_classes:
                    rec["best_val"]["per_class_iou"] = _classes(best, 30.0)
            recs.append(rec)
    return recs


@pytest.fixture
def frame(tmp_path: Path):
    return load_results(write(tmp_path / "results", _records()))


def test_best_takes_the_better_of_the_best_evaluation_and_the_final_model(frame) -> None:
    table = build_tables(frame, TableSpec(checkpoint="best"))[0]
    cells = {table.method(row): table.cells[ri, 0] for ri, row in enumerate(table.rows)}
    assert cells["kd"].values == {0: 74.5, 1: 74.0, 2: 75.0}  # best, final (better), final
    assert cells["kd"].final_only == ["2"] and cells["none"].final_only == ["0", "1", "2"]
    mfsc = build_tables(frame, TableSpec(metric="mfsc", checkpoint="best"))[0]
    kd = next(mfsc.cells[ri, 0] for ri, row in enumerate(mfsc.rows) if mfsc.method(row) == "kd")
    assert kd.values == {0: 76.5, 1: 75.0, 2: 76.0}  # mFsc of the checkpoint chosen by mIoU
    final = build_tables(frame, TableSpec())[0]
    kd_final = next(final.cells[ri, 0] for ri, r in enumerate(final.rows) if r[0] == "kd")
    assert kd_final.mean == pytest.approx(np.mean(FINAL["kd"])) and not kd_final.final_only


def test_caption_and_footnotes_say_which_checkpoint(frame) -> None:
    text = render(build_tables(frame, TableSpec(checkpoint="best")), "markdown")
    assert "mIoU (%) of the best checkpoint" in text
    assert "chosen on the evaluation split itself" in text
    assert "seed 2 has no periodic evaluation: the final model's value" in text
    assert "seeds 0, 1, 2 have no periodic evaluation" in text
    assert "best checkpoint" not in render(build_tables(frame, TableSpec()), "markdown")


def _per_class(frame, method: str) -> dict[str, dict]:
    """Class -> the values of ``method``'s cell of the per-class table at the best checkpoint."""
    table = build_tables(frame, TableSpec(metric="per_class", checkpoint="best"))[0]
    ri = next(i for i, row in enumerate(table.rows) if table.method(row) == method)
    return {col.key[0]: table.cells[ri, ci] for ci, col in enumerate(table.columns)}


def test_per_class_tables_at_the_best_checkpoint_use_its_per_class_scores(frame) -> None:
    kd = _per_class(frame, "kd")
    # seed 0: the best evaluation (car 30 below road); 1: the final model won; 2: no evaluation
    assert kd["road"].values == {0: 74.5, 1: 74.0, 2: 75.0}
    assert kd["car"].values == {0: 44.5, 1: 54.0, 2: 55.0}
    assert kd["car"].final_only == ["2"] and _per_class(frame, "none")["car"].final_only == [
        "0", "1", "2"]
    text = render(build_tables(frame, TableSpec(metric="per_class", checkpoint="best")),
                  "markdown")
    assert "IoU (%) of the best checkpoint" in text
    assert "seed 2 has no periodic evaluation: the final model's value" in text
    final = build_tables(frame, TableSpec(metric="per_class"))[0]
    ri = next(i for i, row in enumerate(final.rows) if final.method(row) == "kd")
    car = next(ci for ci, col in enumerate(final.columns) if col.key == ("car",))
    assert final.cells[ri, car].values == {0: 53.0, 1: 54.0, 2: 55.0}


def test_a_best_evaluation_without_per_class_scores_is_not_the_final_models(
        tmp_path: Path) -> None:
    frame = load_results(write(tmp_path / "results", _records(best_classes=False)))
    road = _per_class(frame, "kd")["road"]
    assert road.values == {1: 74.0, 2: 75.0}  # seed 0's best has no per-class IoU
    assert road.problems == ["seed 0 has a null value"]


def test_the_report_shows_per_class_tables_of_the_best_checkpoint(tmp_path: Path) -> None:
    results = write(tmp_path / "results", _records())
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out), "--metrics", "miou",
                 "--checkpoint", "best"]) == 0
    text = (out / "report.md").read_text()
    assert "### Per-class IoU of the best checkpoint" in text
    assert "IoU (%) of the best checkpoint" in (out / "per_class.md").read_text()
    assert main(["table", str(results), "--metric", "iou.car", "--checkpoint", "best",
                 "--format", "csv", "--out", str(tmp_path / "car.csv")]) == 0
    cells = pd.read_csv(tmp_path / "car.csv").set_index("method")
    assert cells.loc["kd", "mean"] == pytest.approx(np.mean([44.5, 54.0, 55.0]))
