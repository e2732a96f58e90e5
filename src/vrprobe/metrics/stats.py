"""Correlation coefficients with a bootstrap confidence interval and a permutation p-value.

Everything is float64 numpy, vectorised over resamples (chunked so memory stays bounded), and deterministic for a
given ``seed``: one ``np.random.default_rng(seed)`` draws the bootstrap resamples first, then the permutations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

Method = Literal["pearson", "spearman", "pointbiserial"]
ALPHA = 0.05
"""The significance level of every verdict: a result is "supported" when its 95% interval excludes 0 and its
permutation p (or Benjamini-Hochberg q, for heads) is below ALPHA."""
_METHODS = ("pearson", "spearman", "pointbiserial")
_CHUNK_ELEMENTS = 1 << 21  # resamples are processed in blocks of about this many (row × sample) entries
_TIE_TOL = 1e-12  # |r_perm| ≥ |r| − tol counts as "at least as extreme" (float round-off in exact ties)


@dataclass
class Correlation:
    """A correlation estimate: ``r`` with a percentile-bootstrap ``ci`` (lo, hi) at ``confidence_level`` and a
    two-sided permutation ``p``; ``n`` pairs, ``n_boot`` resamples and ``n_perm`` permutations requested.
    NaN marks an undefined value (n < 3, constant input, or no resamples/permutations)."""

    method: str
    r: float
    ci: tuple[float, float]
    p: float
    n: int
    n_boot: int
    confidence_level: float
    n_perm: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; NaN becomes None, ``ci`` a 2-list."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "method": self.method,
            "r": clean(self.r),
            "ci": [clean(self.ci[0]), clean(self.ci[1])],
            "p": clean(self.p),
            "n": int(self.n),
            "n_boot": int(self.n_boot),
            "n_perm": int(self.n_perm),
            "confidence_level": float(self.confidence_level),
        }


def _is_binary(a: np.ndarray) -> bool:
    return bool(np.all((a == 0.0) | (a == 1.0)))


def _chunks(total: int, n: int) -> Iterator[int]:
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, total, rows):
        yield min(rows, total - start)


def _centred_ranks(counts: np.ndarray) -> np.ndarray:
    """Average rank minus its mean (n + 1)/2 of each tie group inside each resample, from per-group counts [B, G]."""
    n = counts[0].sum()
    return np.cumsum(counts, axis=1) - counts + (counts + 1.0) / 2.0 - (n + 1.0) / 2.0


def _bootstrap(x: np.ndarray, y: np.ndarray, spearman: bool, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """r of ``n_boot`` resampled (x, y) pair sets; NaN where a resample is constant in x or y.

    Resample b is encoded by multiplicities w_bj (how often pair j was drawn) and per-value group counts, so Pearson
    is a weighted moment computation and Spearman a weighted Pearson on the resample's own average ranks.
    """
    n = x.size
    _, inv_x = np.unique(x, return_inverse=True)
    _, inv_y = np.unique(y, return_inverse=True)
    gx, gy = int(inv_x.max()) + 1, int(inv_y.max()) + 1
    xc, yc = x - x.mean(), y - y.mean()
    moments = np.stack([xc, yc, xc * xc, yc * yc, xc * yc], axis=1)
    out = []
    for rows in _chunks(n_boot, n):
        idx = rng.integers(0, n, size=(rows, n))
        row = np.arange(rows)[:, None]
        cx = np.bincount((inv_x[idx] + gx * row).ravel(), minlength=rows * gx).reshape(rows, gx).astype(np.float64)
        cy = np.bincount((inv_y[idx] + gy * row).ravel(), minlength=rows * gy).reshape(rows, gy).astype(np.float64)
        w = np.bincount((idx + n * row).ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        if spearman:
            rx, ry = _centred_ranks(cx), _centred_ranks(cy)
            sxx, syy = np.einsum("ij,ij,ij->i", cx, rx, rx), np.einsum("ij,ij,ij->i", cy, ry, ry)
            sxy = np.einsum("ij,ij,ij->i", w, rx[:, inv_x], ry[:, inv_y])
        else:
            sx, sy, sxx, syy, sxy = (w @ moments / n).T
            sxy, sxx, syy = sxy - sx * sy, sxx - sx * sx, syy - sy * sy
        constant = (cx.max(axis=1) == n) | (cy.max(axis=1) == n)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
        out.append(np.where(constant, np.nan, r))
    return np.concatenate(out) if out else np.empty(0)


def _permutation_p(a: np.ndarray, b: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """(1 + #{|r_perm| ≥ |r|}) / (1 + n_perm) for Pearson between ``a`` and permutations of ``b``."""
    ac, bc = a - a.mean(), b - b.mean()
    scale = math.sqrt(float(ac @ ac) * float(bc @ bc))
    r_obs = abs(float(ac @ bc) / scale)
    hits = 0
    base = np.arange(a.size)
    for rows in _chunks(n_perm, a.size):
        perms = rng.permuted(np.tile(base, (rows, 1)), axis=1)
        r_perm = np.abs(bc[perms] @ ac / scale)
        hits += int(np.count_nonzero(r_perm >= r_obs - _TIE_TOL))
    return (1 + hits) / (1 + n_perm)


def correlation(
    x: ArrayLike,
    y: ArrayLike,
    method: Method = "pearson",
    *,
    n_boot: int = 2000,
    n_perm: int = 2000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> Correlation:
    """Correlation of paired samples with a bootstrap CI and a permutation p-value.

    Definitions (r is dimensionless, in [−1, 1]):
      - ``pearson``: r = Σ (x−x̄)(y−ȳ) / sqrt(Σ (x−x̄)² · Σ (y−ȳ)²)  (``scipy.stats.pearsonr``).
      - ``spearman``: Pearson r of the average ranks (ties share their mean rank)  (``scipy.stats.spearmanr``).
      - ``pointbiserial``: Pearson r where exactly one of x, y is binary 0/1  (``scipy.stats.pointbiserialr``);
        raises ValueError if neither or both are binary (checked when n ≥ 3).
    CI: percentile bootstrap. Draw ``n_boot`` resamples of the n (x, y) pairs with replacement, recompute r on each
    (Spearman re-ranks within the resample), drop resamples where r is undefined (constant x or y), and take the
    (1−level)/2 and (1+level)/2 quantiles (numpy linear interpolation) of the rest.
    p: two-sided permutation test, p = (1 + #{|r_perm| ≥ |r|}) / (1 + n_perm), with y permuted (ranks for Spearman)
    ``n_perm`` times; |r_perm| within 1e-12 of |r| counts as a tie. Its smallest value is 1 / (1 + n_perm).
    Seeding: a single ``np.random.default_rng(seed)`` draws the resamples, then the permutations, so equal inputs and
    seed give an identical result. Edge cases: n < 3 or a constant x or y gives r, ci and p all NaN (no warning);
    ``n_boot=0`` gives a NaN ci and ``n_perm=0`` a NaN p. Non-finite input raises ValueError.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")
    if n_boot < 0 or n_perm < 0:
        raise ValueError(f"n_boot and n_perm must be >= 0, got {n_boot}, {n_perm}")
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 1-D arrays of equal length, got shapes {xa.shape} and {ya.shape}")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("x and y must be finite (no NaN or inf)")
    n = xa.size
    nan = float("nan")
    result = Correlation(method, nan, (nan, nan), nan, n, n_boot, confidence_level, n_perm)
    if n < 3:
        return result
    if method == "pointbiserial" and _is_binary(xa) == _is_binary(ya):
        raise ValueError("pointbiserial needs exactly one of x, y to be binary 0/1")
    if np.all(xa == xa[0]) or np.all(ya == ya[0]):
        return result

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        if method == "pearson":
            r = stats.pearsonr(xa, ya).statistic
        elif method == "spearman":
            r = stats.spearmanr(xa, ya).statistic
        else:
            binary, other = (xa, ya) if _is_binary(xa) else (ya, xa)
            r = stats.pointbiserialr(binary, other).statistic
    result.r = float(r)

    rng = np.random.default_rng(seed)
    spearman = method == "spearman"
    if n_boot > 0:
        boots = _bootstrap(xa, ya, spearman, n_boot, rng)
        boots = boots[~np.isnan(boots)]
        if boots.size:
            alpha = 1.0 - confidence_level
            lo, hi = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
            result.ci = (float(lo), float(hi))
    if n_perm > 0:
        a, b = (stats.rankdata(xa), stats.rankdata(ya)) if spearman else (xa, ya)
        result.p = float(_permutation_p(a, b, n_perm, rng))
    return result


def mean_interval(
    values: ArrayLike, n_boot: int = 1000, confidence_level: float = 0.95, seed: int = 0
) -> tuple[float | None, tuple[float | None, float | None]]:
    """The mean of `values` with a percentile-bootstrap interval: ``n_boot`` resamples of the values with replacement
    (one ``np.random.default_rng(seed)``), the (1−level)/2 and (1+level)/2 quantiles of their means. None for an
    empty input (and a None interval for n_boot = 0)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None, (None, None)
    mean = float(v.mean())
    if n_boot <= 0:
        return mean, (None, None)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, _CHUNK_ELEMENTS // v.size)
    for start in range(0, n_boot, step):
        k = min(step, n_boot - start)
        means[start : start + k] = v[rng.integers(0, v.size, size=(k, v.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - confidence_level) / 2, (1 + confidence_level) / 2])
    return mean, (float(lo), float(hi))


def benjamini_hochberg(p: ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of a family of m tests: q_(i) = min over j ≥ i of
    min(1, m·p_(j) / j) for the p-values sorted ascending, returned in the input order; rejecting q < α controls the
    false discovery rate at α for independent or positively dependent tests. NaN p-values are left out of the family
    (and stay NaN)."""
    pa = np.asarray(p, dtype=np.float64)
    q = np.full(pa.shape, np.nan)
    ok = np.isfinite(pa)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(pa[ok], kind="stable")
    ranked = pa[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    q[ok] = out
    return q
