"""Calibrators kept as numbers (`vrprobe.metrics.calibrators`): against scikit-learn, JSON round trip, the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from vrprobe.metrics.calibrators import (
    PLATT_C,
    IsotonicCalibrator,
    PlattCalibrator,
    calibrator_from_dict,
    choose_calibrator,
    log_loss,
    logit,
)

from numerics import assert_close


def _data(n: int, truth, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.01, 0.99, size=n)
    return s, (rng.uniform(size=n) < truth(s)).astype(float)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_isotonic_predicts_what_sklearn_predicts_on_new_points():
    s, y = _data(300, lambda s: s**2, 0)
    new = np.concatenate([np.linspace(-0.5, 1.5, 401), np.random.default_rng(1).uniform(size=200)])
    ref = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y).predict(new)
    # scipy's interp1d and np.interp compute one linear interpolation with different roundings: float64, scale 1
    assert_close(IsotonicCalibrator().fit(s, y).predict(new), ref, dtype=np.float64, scale=1.0, what="isotonic")


def test_platt_is_a_logistic_regression_on_the_logit_of_the_score():
    s, y = _data(500, lambda s: _sigmoid(2.0 * np.log(s / (1 - s)) - 0.5), 0)
    platt = PlattCalibrator().fit(s, y)
    ref = LogisticRegression(C=PLATT_C, max_iter=10_000, tol=1e-10).fit(logit(s)[:, None], y)
    new = np.linspace(0.0, 1.0, 101)
    # the same fit (same kernels, same data) gives the same two numbers; only σ is computed apart: float64, scale 1
    assert platt.coef_ == ref.coef_[0, 0] and platt.intercept_ == ref.intercept_[0]
    want = ref.predict_proba(logit(new)[:, None])[:, 1]
    assert_close(platt.predict(new), want, dtype=np.float64, scale=1.0, what="platt")
    assert 1.5 < platt.coef_ < 2.5 and -1.0 < platt.intercept_ < 0.0  # the generating (2, −0.5), roughly


@pytest.mark.parametrize("kind", [PlattCalibrator, IsotonicCalibrator])
def test_json_round_trip_predicts_identically(kind):
    s, y = _data(200, lambda s: s, 3)
    fitted = kind().fit(s, y)
    back = calibrator_from_dict(json.loads(json.dumps(fitted.to_dict())))
    new = np.linspace(0.0, 1.0, 257)
    # JSON writes a float64 as its shortest repr, which reads back to the same float: exact by construction
    assert type(back) is kind and np.array_equal(back.predict(new), fitted.predict(new))


def test_choice_picks_isotonic_for_a_step_and_platt_for_a_clean_sigmoid():
    step = lambda s: np.where(s < 0.5, 0.1, 0.9)  # noqa: E731
    s, y = _data(4000, step, 0)
    chosen, losses = choose_calibrator(s[:2000], y[:2000], s[2000:], y[2000:])
    assert chosen.kind == "isotonic" and losses["isotonic"] < losses["platt"]
    # truth p = σ(2·logit(s)), in Platt's family; labels at their exact frequencies, so the answer is known: on the
    # fit scores 0.1, 0.5, 0.9 the truth is 1/82, 41/82, 81/82 (Platt recovers a = 2, b = 0); isotonic interpolates
    # linearly between them, so at 0.3 and 0.7 it says 0.26 and 0.74 where the truth (16 / 84 of 100) is 0.16 / 0.84
    s_fit = np.repeat([0.1, 0.5, 0.9], 82)
    y_fit = np.concatenate([np.arange(82) < k for k in (1, 41, 81)]).astype(float)
    s_held = np.repeat([0.3, 0.7], 100)
    y_held = np.concatenate([np.arange(100) < k for k in (16, 84)]).astype(float)
    chosen, losses = choose_calibrator(s_fit, y_fit, s_held, y_held)
    assert chosen.kind == "platt" and losses["platt"] < losses["isotonic"]
    assert abs(chosen.coef_ - 2.0) < 1e-3 and abs(chosen.intercept_) < 1e-3  # optimiser tolerance, not rounding
    platt = PlattCalibrator().fit(s_fit, y_fit)
    assert losses["platt"] == log_loss(platt.predict(s_held), y_held)  # same computation: exact
