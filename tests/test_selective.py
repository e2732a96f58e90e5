"""Selective prediction metrics against independent computations: AUROC vs scikit-learn, risk–coverage and AURC vs an
explicit enumeration of every order of tied answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vrprobe.errors import UsageError
from vrprobe.metrics.selective import (
    accuracy_at_coverage,
    aurc,
    auroc,
    auroc_interval,
    logit_margin,
    risk_coverage,
    selective,
)


def test_auroc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for n in (5, 40, 500):
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)
        s = np.round(rng.normal(size=n) + y, 1)  # rounded: many ties
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def brute_force_risk(s, y):
    """Mean over every order of the answers that sorts them by signal (most trusted first) of the error rate of the
    first k, for each k."""
    n = len(s)
    orders = [p for p in itertools.permutations(range(n)) if all(s[p[i]] >= s[p[i + 1]] for i in range(n - 1))]
    risks = np.array([[sum(1 - y[i] for i in p[:k]) / k for k in range(1, n + 1)] for p in orders])
    return risks.mean(0)


def test_risk_coverage_and_aurc_match_enumeration_of_tie_orders():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 7))
        s = rng.integers(0, 3, n).astype(float)  # few distinct values: ties
        y = rng.integers(0, 2, n)
        coverage, risk = risk_coverage(s, y)
        expected = brute_force_risk(s, y)
        assert np.allclose(risk, expected) and np.allclose(coverage, np.arange(1, n + 1) / n)
        assert aurc(s, y) == pytest.approx(expected.mean())
        for c in (0.5, 0.8, 0.9, 1.0):
            k = math.ceil(c * n)
            assert accuracy_at_coverage(s, y, c) == pytest.approx(1 - expected[k - 1])


def test_a_constant_signal_has_the_overall_error_at_every_coverage_and_auroc_half():
    y = np.array([1, 0, 1, 1, 0, 1, 1, 1])
    s = np.zeros_like(y, dtype=float)
    _, risk = risk_coverage(s, y)
    assert np.allclose(risk, 1 - y.mean())
    assert auroc(s, y) == 0.5


def test_interval_brackets_the_estimate_and_contains_half_for_a_random_signal():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    informative = y + rng.normal(size=300)
    lo, hi = auroc_interval(informative, y, seed=0)
    assert lo < auroc(informative, y) < hi and lo > 0.5
    lo, hi = auroc_interval(rng.normal(size=300), y, seed=0)
    assert lo < 0.5 < hi
    assert auroc_interval(informative, y, seed=3) == auroc_interval(informative, y, seed=3)


def test_summary_and_margin():
    lp = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    assert np.allclose(logit_margin(lp), [math.log(0.7 / 0.2), math.log(0.4 / 0.35)])
    out = selective("confidence", [0.9, 0.8, 0.3, 0.2], [1, 1, 0, 1], n_boot=50).to_dict()
    assert out["auroc"] == pytest.approx(roc_auc_score([1, 1, 0, 1], [0.9, 0.8, 0.3, 0.2]))
    assert set(out) >= {"signal", "auroc", "ci", "aurc", "accuracy_at_50", "accuracy_at_80", "accuracy_at_90"}
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


@pytest.mark.parametrize(
    "call",
    [
        lambda: auroc([0.1, 0.2], [1]),
        lambda: auroc([math.nan, 0.2], [1, 0]),
        lambda: auroc([0.1, 0.2], [1, 2]),
        lambda: accuracy_at_coverage([0.1], [1], 0),
        lambda: logit_margin([[0.0]]),
    ],
)
def test_bad_inputs_raise_one_clear_error(call):
    with pytest.raises(UsageError):
        call()
