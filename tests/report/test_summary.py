"""Average ranks, Friedman, Nemenyi and seeds needed over the cells of a hand-made table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from kdbench.report import load_results
from kdbench.report.cells import stats, summary
from kdbench.report.cells.tables import TableSpec, build_tables
from kdbench.report.words.summaries import ranks_table
from tests.report.records import record, write

# per data set (block): mIoU of seeds 0 and 1 for each method
VALUES = {
    "a": {"none": [70.0, 70.4], "kd": [72.0, 73.0], "cwd": [71.0, 71.2]},
    "b": {"none": [60.0, 61.0], "kd": [63.0, 62.6], "cwd": [62.0, 61.0]},
    "c": {"none": [50.0, 50.2], "kd": [51.0, 51.4], "cwd": [52.0, 53.0]},
}


@pytest.fixture
def table(tmp_path: Path):
    """The mIoU table of VALUES, plus a method with a value in one block only."""
    recs = [record(m, s, v, dataset=d) for d, methods in VALUES.items()
            for m, values in methods.items() for s, v in enumerate(values)]
    recs.append(record("lix", 0, 99.0, dataset="a"))  # in one block of three: left out
    (table,) = build_tables(load_results(write(tmp_path, recs)), TableSpec())
    return table


def test_average_ranks_and_friedman(table) -> None:
    r = summary.ranks(table)
    assert r is not None
    assert r.methods == ["none", "cwd", "kd"]
    assert "lix" in r.dropped and len(r.blocks) == 3
    # kd best in a and b, cwd best in c; the baseline last everywhere
    np.testing.assert_allclose(r.average, [3.0, (2 + 2 + 1) / 3, (1 + 1 + 2) / 3])
    means = np.array([[np.mean(VALUES[d][m]) for m in r.methods] for d in "abc"])
    ref = sps.friedmanchisquare(*means.T)
    assert r.chi2 == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    assert r.cd == pytest.approx(stats.nemenyi_q(3) * math.sqrt(3 * 4 / (6 * 3)))
    text = ranks_table(table, r)
    assert [row[0] for row in text.rows] == ["kd", "cwd", "none"]
    assert "Left out for missing values: lix" in text.caption


def test_seeds_needed_from_pooled_paired_differences(table) -> None:
    rows = summary.power(table, delta=1.0)
    assert [p.context for p in rows] == ["a / resnet18", "b / resnet18", "c / resnet18"]
    a = rows[0]
    diffs = [np.subtract(VALUES["a"][m], VALUES["a"]["none"]) for m in ("kd", "cwd")]
    ss = sum(float(np.sum((d - d.mean()) ** 2)) for d in diffs)
    assert a.dof == 2 and a.sd == pytest.approx(math.sqrt(ss / 2))
    assert a.needed == stats.seeds_needed(1.0, a.sd)
    assert a.seeds == 2
    assert a.power_now == pytest.approx(stats.paired_t_power(1.0, a.sd, 2))
