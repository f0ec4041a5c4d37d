"""The statistics behind the tables, as pure functions on numpy arrays.

- Paired tests against the student baseline (pairs = seeds): the paired t-test on the
  differences d_i = a_i − b_i, t = mean(d) / (sd(d)/√n) with n − 1 degrees of freedom, p = 2·P(T
  > |t|) (written out here: scipy's wrapper costs a millisecond per call), or the
  Wilcoxon signed-rank test (scipy's exact distribution for small n, zero differences dropped);
  two-sided p-values.
- Holm's step-down correction over m tests: sort p_(1) ≤ … ≤ p_(m); reject H_(1..i) while
  p_(j) ≤ α/(m − j + 1); adjusted p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).
- t interval of a mean (what tables print as "95% CI"): mean ± t_{(1+level)/2, n−1}·s/√n, with
  s the sample std; exact coverage for normal data at any n ≥ 2.
- Percentile bootstrap interval of a mean: B resamples with replacement of the n values
  (numpy ``default_rng(seed)``), interval = the (1 − level)/2 and (1 + level)/2 quantiles of the
  B resampled means. It under-covers at small n (simulated on normal samples: about 75% at
  n = 3 and 81% at n = 5 for a nominal 95%), so tables offer it only from
  :data:`BOOTSTRAP_MIN_N` values on, labelled as a bootstrap interval.
- Friedman test over N blocks (rows) and k treatments (columns): ranks r_ij within each block
  (1 = best, ties averaged), R_j = Σ_i r_ij, χ²_F = 12/(N k (k+1)) Σ_j R_j² − 3 N (k+1), divided
  by the tie correction 1 − Σ (t³ − t)/(N k (k² − 1)) over tie groups of size t; p from χ²(k−1).
- Nemenyi critical difference (Demšar 2006): CD = q_α √(k(k+1)/(6N)), q_α = the 1 − α quantile of
  the studentized range for k means and infinite degrees of freedom, divided by √2.
- Power of the two-sided paired t-test: with n pairs, δ = Δ/(σ_d/√n), df = n − 1 and critical
  value c = t_{1−α/2, df}, power = P(T > c) + P(T < −c) for T ~ noncentral t(df, δ). scipy's
  noncentral t returns NaN in parts of its domain (e.g. δ of a few tens with df in the
  thousands), so each tail is computed by the noncentral t where that is finite and in [0, 1],
  and otherwise by the normal approximation of the noncentral t (Johnson, Kotz and
  Balakrishnan, Continuous Univariate Distributions vol. 2, eq. 31.26):
  P(T ≤ c) ≈ Φ((c·(1 − 1/(4·df)) − δ) / √(1 + c²/(2·df))), accurate to about 1e-3 for df ≥ 10
  and exact as df → ∞. Power is then never NaN for finite inputs.
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
BOOTSTRAP_MIN_N = 20
"""Fewest values for which tables print a bootstrap interval (it under-covers below)."""


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


def t_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """t interval of the mean of ``values``: mean ± t_{(1+level)/2, n−1}·s/√n; NaNs if n < 2."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    mean = float(x.mean())
    half = float(stats.t.ppf((1.0 + level) / 2.0, x.size - 1)) * float(x.std(ddof=1))
    half /= math.sqrt(x.size)
    return mean - half, mean + half


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
    (n >= 2). With sd = 0 the power is 1 for any delta != 0. Never NaN for finite inputs
    (module docstring: the noncentral t with a normal-approximation fallback).
    """
    n_arr = np.asarray(n, dtype=np.float64)
    df = n_arr - 1.0
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    if sd == 0:
        power = np.where(delta != 0, 1.0, alpha) * np.ones_like(n_arr)
    else:
        nc = delta / (sd / np.sqrt(n_arr))
        power = _nct_sf(crit, df, nc) + _nct_cdf(-crit, df, nc)
        power = np.clip(power, 0.0, 1.0)
    return float(power) if np.ndim(power) == 0 else power


def _nct_cdf(x: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """P(T ≤ x) for T ~ noncentral t(df, nc): scipy where valid, else the normal approximation."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exact = np.asarray(stats.nct.cdf(x, df, nc), dtype=np.float64)
    return np.where(_valid(exact), exact, _nct_cdf_normal(x, df, nc))


def _nct_sf(x: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """P(T > x) for T ~ noncentral t(df, nc): scipy where valid, else the normal approximation."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exact = np.asarray(stats.nct.sf(x, df, nc), dtype=np.float64)
    return np.where(_valid(exact), exact, 1.0 - _nct_cdf_normal(x, df, nc))


def _valid(p: np.ndarray) -> np.ndarray:
    return np.isfinite(p) & (p >= 0.0) & (p <= 1.0)


def _nct_cdf_normal(x: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """Normal approximation of the noncentral t's cdf (module docstring)."""
    z = (x * (1.0 - 1.0 / (4.0 * df)) - nc) / np.sqrt(1.0 + x * x / (2.0 * df))
    return stats.norm.cdf(z)


def seeds_needed(
    delta: float,
    sd: float,
    alpha: float = 0.05,
    power: float = 0.8,
    max_seeds: int | None = None,
) -> int | None:
    """The smallest n >= 2 whose paired t-test power reaches ``power``.

    Every difference delta != 0 has an answer (the power tends to 1 as n grows), however large;
    None only for delta = 0 with sd > 0 (no number of seeds detects no difference), or when
    the answer exceeds ``max_seeds`` if one is given. The power grows with n, so the answer is
    bracketed by doubling n and then bisected.
    """

    def enough(n: int) -> bool:
        """Whether n pairs reach the target power."""
        return float(paired_t_power(delta, sd, n, alpha)) >= power

    if delta == 0 and sd != 0:
        return None
    lo, hi = 1, 2  # invariant: lo is too few (n = 1 cannot test), hi may be enough
    while not enough(hi):
        if max_seeds is not None and hi >= max_seeds:
            return None
        lo, hi = hi, 2 * hi if max_seeds is None else min(2 * hi, max_seeds)
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
