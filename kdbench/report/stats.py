"""The statistics behind the tables, as pure functions on numpy arrays.

- Paired tests against the student baseline (pairs = seeds): the paired t-test on the
  differences d_i = a_i − b_i, t = mean(d) / (sd(d)/√n) with n − 1 degrees of freedom, p = 2·P(T
  > |t|) (written out here: scipy's wrapper costs a millisecond per call), or the
  Wilcoxon signed-rank test (scipy's exact distribution for small n, zero differences dropped);
  two-sided p-values.
- Holm's step-down correction over m tests: sort p_(1) ≤ … ≤ p_(m); reject H_(1..i) while
  p_(j) ≤ α/(m − j + 1); adjusted p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).
- Percentile bootstrap interval of a mean: B resamples with replacement of the n values
  (numpy ``default_rng(seed)``), interval = the (1 − level)/2 and (1 + level)/2 quantiles of the
  B resampled means.
- Friedman test over N blocks (rows) and k treatments (columns): ranks r_ij within each block
  (1 = best, ties averaged), R_j = Σ_i r_ij, χ²_F = 12/(N k (k+1)) Σ_j R_j² − 3 N (k+1), divided
  by the tie correction 1 − Σ (t³ − t)/(N k (k² − 1)) over tie groups of size t; p from χ²(k−1).
- Nemenyi critical difference (Demšar 2006): CD = q_α √(k(k+1)/(6N)), q_α = the 1 − α quantile of
  the studentized range for k means and infinite degrees of freedom, divided by √2.
- Power of the two-sided paired t-test: with n pairs, δ = Δ/(σ_d/√n), df = n − 1 and critical
  value c = t_{1−α/2, df}, power = P(T > c) + P(T < −c) for T ~ noncentral t(df, δ).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

TESTS = ("ttest", "wilcoxon")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def paired_pvalue(a: Sequence[float], b: Sequence[float], test: str = "ttest") -> float:
    """Two-sided p-value of the paired ``test`` of ``a`` against ``b`` (equal length n).

    NaN when n < 2 (nothing to test); 1.0 when every difference is zero (no evidence of a
    difference), which scipy would report as NaN.
    """
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of one length: {a_arr.shape}, {b_arr.shape}")
    if a_arr.size < 2:
        return math.nan
    diff = a_arr - b_arr
    if not np.any(diff):
        return 1.0
    if test == "ttest":
        sd = float(diff.std(ddof=1))
        if sd == 0.0:  # every pair differs by the same non-zero amount: t is infinite
            return 0.0
        t = float(diff.mean()) / (sd / math.sqrt(diff.size))
        return float(2.0 * stats.t.sf(abs(t), diff.size - 1))
    if test == "wilcoxon":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(stats.wilcoxon(a_arr, b_arr).pvalue)
    raise ValueError(f"unknown test {test!r}; expected one of {TESTS}")


def wilcoxon_min_pvalue(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon test can give with n non-zero pairs.

    All n signs positive is one of the 2^n equally likely sign patterns, on each side: 2/2^n.
    """
    return min(1.0, 2.0 / 2.0**n)


def holm(pvalues: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and reject decisions at level ``alpha`` (module docstring).

    NaN p-values (untested hypotheses) stay NaN, are never rejected and do not count in m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    reject = np.zeros(p.shape, dtype=bool)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    order = tested[np.argsort(p[tested], kind="stable")]
    running_max = 0.0
    for j, index in enumerate(order):
        running_max = max(running_max, min(1.0, (m - j) * p[index]))
        adjusted[index] = running_max
    reject[tested] = adjusted[tested] <= alpha
    return adjusted, reject


def bootstrap_ci(
    values: Sequence[float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def block_ranks(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Ranks within each block (row) of the (N, k) ``scores``: 1 = best, ties averaged."""
    signed = -scores if higher_is_better else scores
    return stats.rankdata(signed, axis=1)


def friedman(scores: np.ndarray, higher_is_better: bool = True) -> tuple[float, float]:
    """Friedman's χ²_F with tie correction and its p-value for (N blocks, k treatments)."""
    ranks = block_ranks(np.asarray(scores, dtype=np.float64), higher_is_better)
    n, k = ranks.shape
    rank_sums = ranks.sum(axis=0)
    chi2 = 12.0 / (n * k * (k + 1)) * float(np.sum(rank_sums**2)) - 3.0 * n * (k + 1)
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts.astype(np.float64) ** 3 - counts))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:  # every block is one tie: no evidence against equal treatments
        return 0.0, 1.0
    chi2 /= correction
    return chi2, float(stats.chi2.sf(chi2, k - 1))


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """q_α of the Nemenyi test for k treatments: studentized range quantile (df = ∞) / √2."""
    if k < 2:
        raise ValueError(f"the Nemenyi test needs k >= 2 treatments, got {k}")
    return float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks: q_α √(k(k+1)/(6N))."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


def paired_t_power(
    delta: float, sd: float, n: int | np.ndarray, alpha: float = 0.05
) -> float | np.ndarray:
    """Power of the two-sided paired t-test with n pairs to detect a mean difference ``delta``.

    ``sd`` is the standard deviation of the paired differences; ``n`` an int or an int array
    (n >= 2). With sd = 0 the power is 1 for any delta != 0.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    df = n_arr - 1.0
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    if sd == 0:
        power = np.where(delta != 0, 1.0, alpha) * np.ones_like(n_arr)
    else:
        nc = delta / (sd / np.sqrt(n_arr))
        power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    return float(power) if np.ndim(power) == 0 else power


def seeds_needed(
    delta: float, sd: float, alpha: float = 0.05, power: float = 0.8, max_seeds: int = 10_000
) -> int | None:
    """The smallest n >= 2 whose paired t-test power reaches ``power``; None if none up to max.

    The power grows with n, so the answer is bracketed by doubling n and then bisected.
    """

    def enough(n: int) -> bool:
        """Whether n pairs reach the target power."""
        return float(paired_t_power(delta, sd, n, alpha)) >= power

    if not enough(max_seeds):
        return None
    lo, hi = 1, 2  # invariant: lo is too few (n = 1 cannot test), hi may be enough
    while not enough(hi):
        lo, hi = hi, min(2 * hi, max_seeds)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def pooled_sd(samples: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled standard deviation of several samples and its degrees of freedom.

    s_p² = Σ_i (n_i − 1) s_i² / Σ_i (n_i − 1) over samples with n_i >= 2; (NaN, 0) if none.
    """
    num = 0.0
    dof = 0
    for sample in samples:
        x = np.asarray(sample, dtype=np.float64)
        if x.size >= 2:
            num += float(np.sum((x - x.mean()) ** 2))
            dof += x.size - 1
    return (math.sqrt(num / dof), dof) if dof else (math.nan, 0)
