"""A method's logged statistics (DWLD's weight correlations) reach the report's curves."""

from __future__ import annotations

import math
import struct
from pathlib import Path

from kdbench.report.records.frame import histories
from kdbench.report.render.plots import training_curves


def record(run_id: str, method: str, seed: int, stats: bool) -> dict:
    history = [{"step": 0, "eval": {"miou": 1.0}}]
    for step in (2, 4):
        entry = {"step": step, "loss": 1.0 / step, "losses": {"ce": 1.0 / step}}
        if stats:
            entry["statistics"] = {"w_t_spearman": 0.1 * step + seed, "w_t_mean": 1.0}
        history.append(entry)
    axes = {"dataset": "synthdrive", "student": "s", "method": method, "seed": seed}
    return {"id": run_id, "kind": "student", "suite": "t", "axes": axes, "history": history}


def png_width(path: Path) -> int:
    """Width in pixels from the PNG's IHDR chunk."""
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def test_histories_carry_statistics_columns() -> None:
    frame = histories([record("a", "dwld", 0, True), record("b", "kd", 0, False)])
    assert list(frame.columns[-2:]) == ["stat.w_t_mean", "stat.w_t_spearman"]
    dwld = frame[frame["method"] == "dwld"]
    assert dwld["stat.w_t_spearman"].tolist() == [0.2, 0.4]
    assert frame[frame["method"] == "kd"]["stat.w_t_spearman"].map(math.isnan).all()
    assert list(histories([record("c", "kd", 0, False)]).columns)[-1] == "loss"


def test_training_curves_add_a_correlation_panel_only_when_logged(tmp_path: Path) -> None:
    with_stats = histories([record("a", "dwld", 0, True), record("b", "dwld", 1, True),
                            record("c", "kd", 0, False)])
    without = histories([record("c", "kd", 0, False)])
    (one,) = training_curves(without, tmp_path / "one.png", "plain")
    (two,) = training_curves(with_stats, tmp_path / "two.png", "with statistics")
    assert png_width(one) == 960 and png_width(two) == 1650  # 6.4 in and 11 in at 150 dpi
