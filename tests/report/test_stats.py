"""The statistics against scipy, exact enumerations, hand computations and textbook values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from kdbench.report.cells import stats
from kdbench.report.cells.summary import cliques

A = [71.2, 70.8, 72.1, 71.9, 70.5, 71.4]
B = [70.1, 70.9, 70.7, 71.0, 69.8, 70.2]


def test_paired_ttest_matches_scipy_and_the_formula() -> None:
    d = np.subtract(A, B)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    by_hand = 2 * sps.t.sf(abs(t), d.size - 1)
    p = stats.paired_pvalue(A, B, "ttest")
    assert p == pytest.approx(sps.ttest_rel(A, B).pvalue, rel=1e-12)
    assert p == pytest.approx(by_hand, rel=1e-12)
    assert stats.paired_pvalue(B, A, "ttest") == pytest.approx(p, rel=1e-12)


def test_wilcoxon_matches_scipy_and_the_exact_sign_enumeration() -> None:
    d = np.subtract(A, B)
    ranks = sps.rankdata(np.abs(d))
    w_plus = ranks[d > 0].sum()
    # exact null distribution: every sign pattern of the ranks is equally likely
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s)
            for signs in itertools.product([0, 1], repeat=d.size)]
    total = ranks.sum()
    extreme = max(w_plus, total - w_plus)
    exact = np.mean([s >= extreme or s <= total - extreme for s in sums])
    p = stats.paired_pvalue(A, B, "wilcoxon")
    assert p == pytest.approx(sps.wilcoxon(A, B).pvalue, rel=1e-12)
    assert p == pytest.approx(exact, rel=1e-12)


def test_paired_tests_edge_cases() -> None:
    assert math.isnan(stats.paired_pvalue([1.0], [0.0]))
    for test in stats.TESTS:
        assert stats.paired_pvalue([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], test) == 1.0
    assert stats.paired_pvalue([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], "ttest") == 0.0
    assert stats.wilcoxon_min_pvalue(3) == 0.25
    assert stats.paired_pvalue([5.0, 6.0, 7.0], [1.0, 2.0, 2.5], "wilcoxon") == 0.25


def test_holm_against_a_hand_computation() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06
    adjusted, reject = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]
    # the step-down stops at the first non-rejection even if a later raw p is small enough
    _, reject = stats.holm([0.02, 0.026, 0.04], alpha=0.05)  # 0.06 > 0.05 stops at once
    assert reject.tolist() == [False, False, False]
    adjusted, reject = stats.holm([math.nan, 0.01, 0.04], alpha=0.05)  # m = 2
    assert math.isnan(adjusted[0]) and not reject[0]
    np.testing.assert_allclose(adjusted[1:], [0.02, 0.04])
    assert reject[1:].tolist() == [True, True]


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0])
    # all 4^4 resamples are equally likely: the exact distribution of the resampled mean
    means = np.sort([np.mean(c) for c in itertools.product(x, repeat=x.size)])
    cdf = np.arange(1, means.size + 1) / means.size
    lo_exact = means[np.searchsorted(cdf, 0.025)]
    hi_exact = means[np.searchsorted(cdf, 0.975)]
    lo, hi = stats.bootstrap_ci(x, resamples=20_000, seed=3)
    assert lo == pytest.approx(lo_exact, abs=0.26)  # atoms of the distribution are 0.25 apart
    assert hi == pytest.approx(hi_exact, abs=0.26)
    assert stats.bootstrap_ci(x) == stats.bootstrap_ci(x)  # seeded
    assert stats.bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)


def test_friedman_matches_scipy_with_and_without_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 4)) + np.array([0.0, 0.5, 1.0, 1.5])
    tied = np.round(scores * 2) / 2
    tied[0] = [1.0, 1.0, 1.0, 2.0]
    for data in (scores, tied):
        chi2, p = stats.friedman(data)
        ref = sps.friedmanchisquare(*data.T)
        assert chi2 == pytest.approx(ref.statistic, rel=1e-10)
        assert p == pytest.approx(ref.pvalue, rel=1e-10)
    assert stats.friedman(np.ones((3, 4))) == (0.0, 1.0)


def test_block_ranks_best_is_one_and_ties_are_averaged() -> None:
    ranks = stats.block_ranks(np.array([[70.0, 72.0, 72.0, 60.0]]))
    assert ranks.tolist() == [[3.0, 1.5, 1.5, 4.0]]
    assert stats.block_ranks(np.array([[1.0, 2.0]]), higher_is_better=False).tolist() == [[1, 2]]


def test_nemenyi_q_matches_demsar_table_and_example() -> None:
    # Demšar (2006), Table 5(a), alpha = 0.05, k = 2..10
    table = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    for k, q in zip(range(2, 11), table, strict=True):
        assert stats.nemenyi_q(k, 0.05) == pytest.approx(q, abs=1e-3)
    # his worked example: k = 4 classifiers, N = 14 data sets -> CD = 1.25
    assert stats.nemenyi_cd(4, 14, 0.05) == pytest.approx(1.25, abs=5e-3)


def test_seeds_needed_matches_textbook_values() -> None:
    # paired t-test, two-sided alpha = 0.05, power 0.8 (Cohen's d_z; G*Power gives 34, 15, 10)
    assert stats.seeds_needed(0.5, 1.0) == 34
    assert stats.seeds_needed(0.8, 1.0) == 15
    assert stats.seeds_needed(1.0, 1.0) == 10
    assert stats.seeds_needed(2.0, 4.0) == 34  # only delta / sd matters
    assert stats.seeds_needed(0.0, 1.0) is None
    assert stats.seeds_needed(1.0, 0.0) == 2


def test_power_matches_a_monte_carlo_simulation() -> None:
    n, delta, sd, sims = 8, 1.0, 1.2, 20_000
    rng = np.random.default_rng(1)
    d = rng.normal(delta, sd, size=(sims, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    simulated = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
    power = stats.paired_t_power(delta, sd, n, 0.05)
    se = math.sqrt(power * (1 - power) / sims)
    assert abs(simulated - power) < 4 * se


def test_pooled_sd_against_a_hand_computation() -> None:
    sd, dof = stats.pooled_sd([[1.0, 3.0], [2.0, 4.0, 6.0], [5.0]])
    # sums of squares 2 and 8 over 1 + 2 degrees of freedom
    assert dof == 3
    assert sd == pytest.approx(math.sqrt(10 / 3))
    assert math.isnan(stats.pooled_sd([[1.0]])[0])


def test_cliques_are_maximal_runs_within_the_critical_difference() -> None:
    assert cliques([1.0, 1.5, 1.9, 3.5, 3.6], cd=1.0) == [(0, 2), (3, 4)]  # (1, 2) is inside
    assert cliques([1.0, 1.5, 2.2, 3.5, 3.6], cd=1.0) == [(0, 1), (1, 2), (3, 4)]
    assert cliques([3.0, 1.0, 2.0], cd=5.0) == [(0, 2)]
    assert cliques([1.0, 3.0, 5.0], cd=1.0) == []


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_printed_95_ci_covers_the_mean_95_percent_of_the_time(n: int) -> None:
    """2,000 normal samples of n values: the t interval covers the true mean 93-97% of the time
    (the percentile bootstrap, for contrast, covers about 75% at n = 3)."""
    rng = np.random.default_rng(n)
    samples = rng.normal(loc=3.0, scale=2.0, size=(2000, n))
    covered = [lo <= 3.0 <= hi for lo, hi in (stats.t_ci(s) for s in samples)]
    assert 0.93 <= np.mean(covered) <= 0.97
    assert math.isnan(stats.t_ci([1.0])[0])


def direct_power(delta_over_sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test from the definition of the noncentral t, by quadrature.

    T = (Z + δ) / sqrt(V/df), Z ~ N(0, 1), V ~ χ²(df), δ = d·√n: power = E_V[P(|T| > c)], with
    P(|T| > c | V = v) = Φ(δ − c·sqrt(v/df)) + Φ(−δ − c·sqrt(v/df)), integrated over χ²(df).
    """
    from scipy import integrate

    df = n - 1
    c = sps.t.ppf(1 - alpha / 2, df)
    nc = delta_over_sd * math.sqrt(n)

    def integrand(v: float) -> float:
        s = c * math.sqrt(v / df)
        return (sps.norm.cdf(nc - s) + sps.norm.cdf(-nc - s)) * sps.chi2.pdf(v, df)

    lo, hi = sps.chi2.ppf(1e-12, df), sps.chi2.ppf(1 - 1e-12, df)
    value, _ = integrate.quad(integrand, lo, hi, points=[df], limit=200)
    return value


@pytest.mark.parametrize("effect", np.round(np.linspace(0.05, 2.0, 14), 3).tolist())
def test_seeds_needed_agrees_with_a_direct_power_computation(effect: float) -> None:
    n = stats.seeds_needed(effect, 1.0)
    assert n is not None
    assert direct_power(effect, n) >= 0.8 - 1e-6
    if n > 2:
        assert direct_power(effect, n - 1) < 0.8 + 1e-6


def test_power_is_never_nan_and_falls_back_to_the_normal_approximation(monkeypatch) -> None:  # noqa: ANN001
    assert stats.paired_t_power(0.2, 1.0, n=10_000) == pytest.approx(1.0)
    grid = np.linspace(0.05, 2.0, 40)
    assert all(stats.seeds_needed(d, 1.0) is not None for d in grid)
    reference = [stats.paired_t_power(d, 1.0, 30) for d in (0.1, 0.3, 0.6)]
    # Where scipy's noncentral t gives NaN, the normal approximation takes over.
    monkeypatch.setattr(stats.stats.nct, "sf", lambda *a: np.full(np.shape(a[0]), np.nan))
    monkeypatch.setattr(stats.stats.nct, "cdf", lambda *a: np.full(np.shape(a[0]), np.nan))
    for d, want in zip((0.1, 0.3, 0.6), reference, strict=True):
        got = stats.paired_t_power(d, 1.0, 30)
        assert math.isfinite(got) and got == pytest.approx(want, abs=5e-3)
        assert got == pytest.approx(direct_power(d, 30), abs=5e-3)
    assert stats.seeds_needed(0.3, 1.0) is not None


def test_tiny_effects_get_an_answer_however_large() -> None:
    """Normal approximation n ≈ ((z_0.975 + z_0.8)·sd/delta)² + 1: 78,489 seeds for 0.01 sd."""
    n = stats.seeds_needed(0.01, 1.0)
    assert n is not None and abs(n - ((1.959964 + 0.841621) / 0.01) ** 2) < 5
    assert stats.seeds_needed(0.01, 1.0, max_seeds=1000) is None
