"""Correlations with bootstrap CIs and permutation p-values."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from vrprobe.metrics.stats import Correlation, correlation


def _correlated(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_bootstrap_ci_contains_r_and_is_narrow(method: str) -> None:
    x, y = _correlated(5000, 0.5, seed=0)
    res = correlation(x, y, method)
    lo, hi = res.ci
    assert lo < res.r < hi
    assert 0.0 < hi - lo < 0.06  # standard error about (1 - r^2)/sqrt(n) ≈ 0.011
    if method == "pearson":
        assert lo < 0.5 < hi
    else:
        assert lo < 6 / math.pi * math.asin(0.25) < hi  # Spearman's rho of a bivariate normal with r = 0.5: 0.483
    assert res.n == 5000 and res.n_boot == 2000 and res.confidence_level == 0.95


def test_same_seed_identical_different_seed_differs() -> None:
    x, y = _correlated(300, 0.3, seed=1)
    for method in ("pearson", "spearman"):
        a, b = correlation(x, y, method, seed=5), correlation(x, y, method, seed=5)
        assert a == b
        c = correlation(x, y, method, seed=6)
        assert c.ci != a.ci and c.r == a.r


def test_bootstrap_matches_naive_loop() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 6, 40).astype(np.float64)  # ties on purpose: Spearman must re-rank inside each resample
    y = x + rng.integers(0, 4, 40)
    for method, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        res = correlation(x, y, method, n_boot=300, n_perm=0, seed=9)
        idx = np.random.default_rng(9).integers(0, 40, size=(300, 40))  # the documented draw: resamples first
        boots = np.array([fn(x[i], y[i]).statistic for i in idx if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0])
        np.testing.assert_allclose(res.ci, np.quantile(boots, [0.025, 0.975]), atol=1e-12, rtol=0)
        assert math.isnan(res.p)


def test_permutation_p_values() -> None:
    x, y = _correlated(500, 0.4, seed=3)
    for method in ("pearson", "spearman"):
        assert correlation(x, y, method, n_perm=999).p == pytest.approx(1 / 1000)  # nothing as extreme
    rng = np.random.default_rng(4)
    u, v = rng.normal(size=500), rng.normal(size=500)
    for method in ("pearson", "spearman"):
        res = correlation(u, v, method)
        assert res.p > 0.05
        assert res.ci[0] < 0.0 < res.ci[1]
    assert 1 / 2001 <= res.p <= 1.0


def test_permutation_p_close_to_analytic_p() -> None:
    x, y = _correlated(60, 0.2, seed=8)
    ours = correlation(x, y, n_boot=0, n_perm=4000, seed=1).p
    ref = stats.pearsonr(x, y).pvalue  # t-test p; the exact permutation p is close to it for normal data
    assert ours == pytest.approx(ref, abs=0.03)  # Monte-Carlo error of the permutation p ≈ 0.005 at 4000 draws


def test_r_agrees_with_scipy() -> None:
    x, y = _correlated(400, 0.6, seed=5)
    assert correlation(x, y, "pearson", n_boot=0, n_perm=0).r == pytest.approx(stats.pearsonr(x, y).statistic)
    assert correlation(x, y, "spearman", n_boot=0, n_perm=0).r == pytest.approx(stats.spearmanr(x, y).statistic)
    b = (x > 0.3).astype(np.float64)
    expected = stats.pointbiserialr(b, y).statistic
    assert correlation(b, y, "pointbiserial", n_boot=0, n_perm=0).r == pytest.approx(expected)
    assert correlation(y, b, "pointbiserial", n_boot=0, n_perm=0).r == pytest.approx(expected)
    assert expected == pytest.approx(stats.pearsonr(b, y).statistic)


def test_pointbiserial_ci_and_p() -> None:
    rng = np.random.default_rng(6)
    b = (rng.random(1000) < 0.3).astype(np.float64)
    z = b + rng.normal(size=1000)
    res = correlation(z, b, "pointbiserial", n_boot=500, n_perm=500)
    assert res.ci[0] < res.r < res.ci[1] and res.p == pytest.approx(1 / 501)


def test_pointbiserial_validation() -> None:
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="exactly one"):
        correlation(rng.normal(size=20), rng.normal(size=20), "pointbiserial")
    with pytest.raises(ValueError, match="exactly one"):
        correlation(rng.integers(0, 2, 20), rng.integers(0, 2, 20), "pointbiserial")


@pytest.mark.parametrize(
    ("method", "x", "y"),
    [
        ("pearson", [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]),  # constant y
        ("spearman", [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]),
        ("pearson", [5.0, 5.0, 5.0], [1.0, 0.0, 1.0]),  # constant x
        ("spearman", [5.0, 5.0, 5.0], [1.0, 0.0, 1.0]),
        ("pointbiserial", [5.0, 5.0, 5.0], [1.0, 0.0, 1.0]),
        ("pointbiserial", [0.3, 0.5, 0.9], [1.0, 1.0, 1.0]),  # constant binary side
        ("pearson", [1.0, 2.0], [2.0, 1.0]),  # n < 3
        ("spearman", [1.0, 2.0], [2.0, 1.0]),
        ("pointbiserial", [1.0, 0.0], [0.3, 0.7]),
        ("pointbiserial", [1.0, 0.0], [0.0, 1.0]),  # n < 3 wins over the binary check
        ("pearson", [], []),  # n = 0
    ],
)
def test_degenerate_input_gives_nan_quietly(method: str, x: list, y: list) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning (or any other) may escape
        res = correlation(x, y, method)
    assert math.isnan(res.r) and math.isnan(res.p) and all(math.isnan(v) for v in res.ci)
    assert res.n == len(x) and res.to_dict()["r"] is None and res.to_dict()["ci"] == [None, None]


def test_to_dict_is_json() -> None:
    x, y = _correlated(50, 0.5, seed=9)
    res = correlation(x, y, "spearman", n_boot=100, n_perm=100)
    d = res.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert isinstance(d["ci"], list) and len(d["ci"]) == 2 and d["method"] == "spearman" and d["n_perm"] == 100
    assert isinstance(res, Correlation)


def test_bad_arguments_raise() -> None:
    x, y = _correlated(20, 0.5, seed=10)
    for kwargs in ({"method": "kendall"}, {"confidence_level": 1.0}, {"n_boot": -1}):
        with pytest.raises(ValueError):
            correlation(x, y, **kwargs)
    with pytest.raises(ValueError):
        correlation(x, y[:-1])
    with pytest.raises(ValueError):
        correlation(np.append(x, np.nan), np.append(y, 0.0))
