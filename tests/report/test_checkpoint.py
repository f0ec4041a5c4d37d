"""``--checkpoint best``: each run's best evaluation by mIoU, captions and footnotes saying so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdbench.cli import main
from kdbench.errors import KdbenchError
from kdbench.report import load_results
from kdbench.report.cells.tables import TableSpec, build_tables
from kdbench.report.render.formats import render
from tests.report.records import record, write

FINAL = {"none": [70.0, 71.0, 72.0], "kd": [73.0, 74.0, 75.0]}
BEST = {"kd": [74.5, 73.0, None]}
"""kd's best periodic mIoU per seed: better than final on seed 0, worse on seed 1, none on 2."""


def _records() -> list[dict]:
    recs = [record("teacher", 0, 80.0)]
    for method, values in FINAL.items():
        for seed, v in enumerate(values):
            rec = record(method, seed, v)
            best = BEST.get(method, [None] * 3)[seed]
            if best is not None:
                rec["metrics"]["best_val"] = {"step": 100, "miou": best, "mfsc": best + 2,
                                              "pixel_acc": best + 10}
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


def test_best_per_class_is_a_user_error(tmp_path: Path, frame) -> None:
    with pytest.raises(KdbenchError, match="best evaluation"):
        build_tables(frame, TableSpec(metric="per_class", checkpoint="best"))
    results = write(tmp_path / "r2", _records())
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out), "--metrics", "miou",
                 "--checkpoint", "best"]) == 0
    assert "of the best checkpoint" in (out / "report.md").read_text()
