"""Reliability inside groups of samples: sharpness terciles, calibration error and confident errors per group, and
error rates of a chosen subset, each with a percentile-bootstrap interval.

- `terciles(values)`: group 0, 1, 2 of each sample by its average rank r (1 = lowest value) among the n values,
  ⌊3·(r − 1)/n⌋; ties share their average rank and so their group; distinct values give groups of ⌊n/3⌋ or ⌈n/3⌉.
  For sharpness_norm (lower = sharper) group 0 is the sharpest third.
- `ece_interval(confidence, correct)`: ECE (`vrprobe.metrics.calibration.ece`, 15 equal-width bins) with an interval.
- `confident_error_rate(confidence, correct, threshold)`: among the samples with confidence ≥ threshold, the fraction
  that are wrong, Σ (1 − correct_i)·[c_i ≥ t] / Σ [c_i ≥ t]; the denominator is the number of confident samples, not
  the group's size; undefined (None) when no sample is confident.
- `by_group(...)`: both of the above per group, `error_among(...)`: the error rate of a masked subset.
Intervals: resample the group's n samples with replacement `n_boot` times (one ``np.random.default_rng(seed)``),
recompute the statistic, drop resamples where it is undefined (no confident sample), and take the (1−level)/2 and
(1+level)/2 quantiles (numpy linear interpolation). None where the value is undefined, or with n_boot = 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from vrprobe.metrics.calibration import bin_edges, bin_index
from vrprobe.metrics.stats import mean_interval

CONFIDENT = 0.8
"""The confidence at and above which an answer counts as confident (`confident_error_rate`)."""
TERCILE_NAMES = ("sharpest", "middle", "least sharp")
_CHUNK_ELEMENTS = 1 << 21  # resamples are drawn in blocks of about this many (row × sample) entries

Interval = tuple[float | None, float | None]


def terciles(values: ArrayLike) -> np.ndarray:
    """Group 0, 1 or 2 (int64) of each value: ⌊3·(r − 1)/n⌋ with r its average rank, 1 = lowest (module docstring).
    An empty input gives an empty array; non-finite values raise ValueError."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(v).all():
        raise ValueError("terciles need finite values")
    if v.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.floor(3.0 * (rankdata(v) - 1.0) / v.size).astype(np.int64)


def _weights(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Multiplicities [rows, n] of `n_boot` resamples of n items with replacement, in blocks."""
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, rows):
        k = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        yield np.bincount((idx + n * np.arange(k)[:, None]).ravel(), minlength=k * n).reshape(k, n).astype(float)


def _quantiles(values: np.ndarray, level: float) -> Interval:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _pairs(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if c.shape != y.shape:
        raise ValueError(f"confidence and correct differ in length ({c.size} vs {y.size})")
    if not (np.all((c >= 0) & (c <= 1)) and np.all((y >= 0) & (y <= 1))):
        raise ValueError("confidence and correct must lie in [0, 1]")
    return c, y


def ece_interval(
    confidence: ArrayLike,
    correct: ArrayLike,
    n_bins: int = 15,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, Interval]:
    """ECE = Σ_b (n_b / N)·|acc_b − conf_b| over non-empty equal-width bins (probability, in [0, 1]; the binning of
    `vrprobe.metrics.calibration`), written as (1/N)·Σ_b |Σ_{i in b} (y_i − c_i)| so that every bootstrap resample
    (module docstring) is one matrix product. (None, (None, None)) for no samples."""
    c, y = _pairs(confidence, correct)
    if c.size == 0:
        return None, (None, None)
    bins = bin_index(c, bin_edges(c, n_bins))
    gaps = np.zeros((c.size, n_bins))
    gaps[np.arange(c.size), bins] = y - c
    value = float(np.abs(gaps.sum(0)).sum() / c.size)
    if n_boot <= 0:
        return value, (None, None)
    rng = np.random.default_rng(seed)
    boots = np.concatenate([np.abs(w @ gaps).sum(1) / c.size for w in _weights(c.size, n_boot, rng)])
    return value, _quantiles(boots, level)


def confident_error_rate(
    confidence: ArrayLike,
    correct: ArrayLike,
    threshold: float = CONFIDENT,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, Interval, int]:
    """(rate, interval, n_confident): among samples with confidence ≥ `threshold`, the fraction wrong,
    Σ (1 − y_i)·[c_i ≥ t] / Σ [c_i ≥ t] (probability, in [0, 1]; fractional credit counts as 1 − y_i of an error).
    The denominator is n_confident, the number of confident samples; the rate is None when it is 0. The interval
    resamples all the given samples (so n_confident varies) and drops resamples without a confident sample."""
    c, y = _pairs(confidence, correct)
    confident = (c >= threshold).astype(np.float64)
    errors = confident * (1.0 - y)
    n_conf = int(confident.sum())
    if n_conf == 0:
        return None, (None, None), 0
    value = float(errors.sum() / n_conf)
    if n_boot <= 0:
        return value, (None, None), n_conf
    rng = np.random.default_rng(seed)
    boots = []
    for w in _weights(c.size, n_boot, rng):
        counts = w @ confident
        with np.errstate(invalid="ignore", divide="ignore"):
            boots.append(np.where(counts > 0, (w @ errors) / counts, np.nan))
    return value, _quantiles(np.concatenate(boots), level), n_conf


def by_group(
    confidence: ArrayLike,
    correct: ArrayLike,
    values: ArrayLike,
    groups: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = CONFIDENT,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per group g = 0, 1, 2 (`groups`, e.g. `terciles(values)`): ([ECE cells], [confident-error cells]). Each cell:
    `tercile` g, `label` (sharpest / middle / least sharp), `n` samples, `range` [min, max] of `values` in the group
    (None when empty), `value` and `ci`; confident-error cells also `n_confident` (the denominator). A group with no
    samples has value None."""
    c, y = _pairs(confidence, correct)
    v = np.asarray(values, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    ece_cells, error_cells = [], []
    for k, label in enumerate(TERCILE_NAMES):
        mask = g == k
        head = {
            "tercile": k,
            "label": label,
            "n": int(mask.sum()),
            "range": [float(v[mask].min()), float(v[mask].max())] if mask.any() else None,
        }
        value, ci = ece_interval(c[mask], y[mask], n_boot=n_boot, seed=seed)
        ece_cells.append({**head, "value": value, "ci": list(ci)})
        rate, rate_ci, n_conf = confident_error_rate(c[mask], y[mask], threshold, n_boot=n_boot, seed=seed)
        error_cells.append({**head, "value": rate, "ci": list(rate_ci), "n_confident": n_conf})
    return ece_cells, error_cells


def error_among(correct: ArrayLike, mask: ArrayLike, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The error rate of the samples where `mask` holds, mean(1 − correct_i) over them (probability), with the
    bootstrap interval of that mean (`vrprobe.metrics.stats.mean_interval`) and `n` = the number of such samples;
    value and interval None when there are none."""
    y = np.asarray(correct, dtype=np.float64).ravel()
    m = np.asarray(mask, dtype=bool).ravel()
    if m.shape != y.shape:
        raise ValueError(f"correct and mask differ in length ({y.size} vs {m.size})")
    value, ci = mean_interval(1.0 - y[m], n_boot=n_boot, seed=seed)
    return {"value": value, "ci": list(ci), "n": int(m.sum())}
