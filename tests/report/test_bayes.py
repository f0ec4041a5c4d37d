"""Bayesian comparisons and the interquartile mean: checked against baycomp, against float64
references written from the published definitions, and on tables with known answers."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from kdbench.report import load_results
from kdbench.report.cells import bayes, iqm
from kdbench.report.cells.tables import TableSpec, build_tables
from kdbench.report.render.formats import render
from tests.report.records import KITTI, demo_records, write

CASES = [  # (per-column or per-seed differences, rope)
    ([0.8, 1.2, 0.3, -0.1, 0.9, 1.5], 0.5),
    ([-0.2, 0.1, 0.05, -0.3, 0.2], 0.5),
    ([-1.0, -2.2, -0.4, -1.7], 0.25),
    ([0.4, 0.6, 0.45], 0.5),
]


def _baycomp():
    return pytest.importorskip("baycomp", reason="pip install baycomp (the reference package)")


@pytest.mark.parametrize(("diffs", "rope"), CASES)
def test_signed_rank_matches_baycomp(diffs: list[float], rope: float) -> None:
    baycomp = _baycomp()
    y = np.asarray(diffs)
    x = np.zeros_like(y)  # baycomp compares y − x
    theirs = baycomp.SignedRankTest.probs(x, y, rope, nsamples=50_000, random_state=7)
    mine = bayes.signed_rank(diffs, rope)
    # independent Monte Carlo draws of 50,000 each: standard error below 0.0023 per share
    assert mine == pytest.approx(theirs, abs=0.012)
    assert sum(mine) == pytest.approx(1.0)


@pytest.mark.parametrize(("diffs", "rope"), CASES)
def test_correlated_t_matches_baycomp_and_the_flat_prior_posterior(diffs, rope) -> None:
    baycomp = _baycomp()
    d = np.asarray(diffs)
    n = d.size
    # baycomp's runs=1 is the cross-validation correlation rho = 1/n
    theirs = baycomp.CorrelatedTTest.probs(np.zeros(n), d, rope, runs=1)
    assert bayes.correlated_t(d, rope, rho=1 / n) == pytest.approx(theirs, abs=1e-12)
    # rho = 0: posterior of the mean is t(n−1) around mean(d) with scale s/sqrt(n)
    se = d.std(ddof=1) / np.sqrt(n)
    worse = stats.t.cdf((-rope - d.mean()) / se, n - 1)
    better = stats.t.sf((rope - d.mean()) / se, n - 1)
    assert bayes.correlated_t(d, rope) == pytest.approx((worse, 1 - worse - better, better),
                                                         abs=1e-12)


def test_signed_rank_limits() -> None:
    assert bayes.signed_rank([5.0, 6.0, 4.0, 7.0], 0.5)[2] > 0.99
    assert bayes.signed_rank([-5.0, -6.0, -4.0, -7.0], 0.5)[0] > 0.99
    assert bayes.signed_rank([0.01, -0.02, 0.0, 0.03, -0.01, 0.02], 0.5)[1] > 0.99
    assert bayes.correlated_t([1.0, 1.0, 1.0], 0.5) == (0.0, 0.0, 1.0)  # zero spread


def _iqm_reference(x: np.ndarray) -> float:
    """The published definition through scipy: mean of the middle 50% (25% trimmed per end)."""
    return float(stats.trim_mean(x, 0.25))


@pytest.mark.parametrize("n", range(1, 14))
def test_iqm_is_the_25_percent_trimmed_mean(n: int) -> None:
    x = np.random.default_rng(n).normal(70.0, 3.0, size=n)
    assert float(iqm.iqm(x)) == pytest.approx(_iqm_reference(x), abs=1e-12)


def _poi_reference(x: list[list[float]], y: list[list[float]]) -> Fraction:
    """P(X > Y) = mean over tasks of the share of run pairs with x > y (ties ½), exactly."""
    per_task = []
    for xm, ym in zip(x, y, strict=True):
        wins = sum(Fraction(1) if a > b else Fraction(1, 2) if a == b else Fraction(0)
                   for a in xm for b in ym)
        per_task.append(wins / (len(xm) * len(ym)))
    return sum(per_task, Fraction(0)) / len(per_task)


def test_probability_of_improvement_is_the_task_mean_of_mann_whitney_shares() -> None:
    x = [[70.0, 71.0, 72.5], [60.0, 61.0], [55.0, 55.0, 56.0, 54.0]]
    y = [[70.0, 70.5, 73.0], [62.0, 59.0, 60.0], [55.0, 53.0]]
    mine = float(iqm.improvement([np.array(t) for t in x], [np.array(t) for t in y]))
    assert mine == pytest.approx(float(_poi_reference(x, y)), abs=1e-12)
    u = stats.mannwhitneyu(x[0], y[0]).statistic  # one task: U / (n k)
    assert float(iqm.improvement([np.array(x[0])], [np.array(y[0])])) == pytest.approx(u / 9)


def _bootstrap_reference(tasks: list[np.ndarray], b: int, seed: int) -> tuple[float, float]:
    """Stratified bootstrap interval of the IQM, one resample at a time."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(b):
        pooled = np.concatenate([rng.choice(t, size=t.size, replace=True) for t in tasks])
        values.append(_iqm_reference(pooled))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def test_stratified_bootstrap_interval_agrees_with_a_reference() -> None:
    rng = np.random.default_rng(3)
    tasks = [rng.normal(mu, 1.0, size=n) for mu, n in ((70, 5), (60, 4), (65, 6))]
    a = iqm.aggregate("m", tasks, None, resamples=20_000, seed=1)
    lo, hi = _bootstrap_reference(tasks, 20_000, seed=2)
    assert a.iqm == pytest.approx(_iqm_reference(np.concatenate(tasks)))
    assert a.iqm_ci == pytest.approx((lo, hi), abs=0.15)
    assert a.iqm_ci[0] < a.iqm < a.iqm_ci[1]


def test_the_demo_table_compares_each_method_by_the_right_test(tmp_path: Path) -> None:
    frame = load_results(write(tmp_path / "results", demo_records()))
    spec = TableSpec(test="bayes", rope=0.5, aggregate="iqm", resamples=2000)
    table = build_tables(frame, spec)[0]
    found = {c.method: c for c in bayes.comparisons(table, 0.5)}
    # kd has both columns: kitti Δ = mean(kd) − 71, vkitti2 Δ = 63 − 61
    assert found["kd"].test == "signed-rank" and found["kd"].n == 2
    assert found["kd"].mean == pytest.approx((np.mean(KITTI["kd"]) - 71.0 + 2.0) / 2)
    cwd = np.subtract(KITTI["cwd"], KITTI["none"])
    assert found["cwd"].test == "paired-t" and found["cwd"].probs == pytest.approx(
        bayes.correlated_t(cwd, 0.5))
    assert found["lix"].probs is None  # one column, one seed
    aggregates = {a.method: a for a in iqm.aggregates(table)}
    assert aggregates["none"].poi is None and aggregates["none"].runs == 5
    kd = [np.array(KITTI["kd"]), np.array([61.0, 65.0])]
    none = [np.array(KITTI["none"]), np.array([60.0, 62.0])]
    assert aggregates["kd"].iqm == pytest.approx(_iqm_reference(np.concatenate(kd)))
    assert aggregates["kd"].poi == pytest.approx(
        float(_poi_reference([list(t) for t in kd], [list(t) for t in none])))
    text = render([table], "markdown")
    assert "Bayesian comparison with the baseline" in text and "Interquartile mean" in text
    assert "<sup>\\*</sup>" not in text and "No significance marks" in text


def test_the_report_has_both_in_markdown_and_html(tmp_path: Path) -> None:
    from kdbench.cli import main

    results = write(tmp_path / "results", demo_records())
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out), "--metrics", "miou", "--test",
                 "bayes", "--rope", "0.5", "--aggregate", "iqm", "--resamples", "500"]) == 0
    for page in ("report.md", "index.html"):
        text = (out / page).read_text()
        assert text.count("Bayesian comparison with the baseline (mIoU (%))") == 1, page
        assert text.count("Interquartile mean (mIoU (%))") == 1, page
