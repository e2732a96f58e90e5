"""Calibration metrics: cross-checks against netcal and torchmetrics, worked examples and edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from netcal.metrics import ECE, MCE
from torchmetrics.functional.classification import binary_calibration_error

from vrprobe.metrics.calibration import (
    HistogramCalibrator,
    ace,
    bin_edges,
    bin_index,
    brier,
    brier_multiclass,
    calibration_summary,
    ece,
    mce,
    nll,
    reliability_diagram,
    reliability_scores,
)

TOL = 1e-9


# --- reference adapters -------------------------------------------------------------------------------------------
# Both references take the top-label formulation directly: a 1-D confidence array plus a 0/1 "is correct" target is
# read as P(class 1) and the class-1 label (netcal: binary mode, `y` used as the accuracy; torchmetrics: binary
# task, preds used as confidences and target as accuracies), which is exactly (confidence, correct).
# Binning differs at edges, by convention and by bug:
#  * netcal (np.histogramdd / binned_statistic_dd) and torchmetrics 1.9 (bucketize(right=True)) use [lo, hi) bins, we
#    use (lo, hi] (Guo et al. 2017). A confidence exactly on an interior edge therefore goes one bin up there. To
#    compare, the reference gets such confidences moved 1e-12 down: same bin membership as ours, and bin means move by
#    <= 1e-12, far below TOL. Our own edge behaviour is asserted directly (test_edge_convention_by_hand).
#  * torchmetrics counts a confidence of exactly 1.0 in a phantom (n_bins+1)-th bin (torchmetrics issue #3510, a bug);
#    it gets 1.0 moved to 1 - 1e-12 (the last real bin). netcal clips to [eps, 1 - eps] so 0 and 1 agree with us.
#  * exactly 0 lands in the first bin in all three (older torchmetrics crashed there, issue #1646).


def _below_interior_edges(c: np.ndarray, n_bins: int) -> np.ndarray:
    interior = bin_edges(c, n_bins)[1:-1]
    return np.where(np.isin(c, interior), c - 1e-12, c)


def netcal_ece_mce(c: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float]:
    x = _below_interior_edges(c, n_bins)
    yi = y.astype(np.int64)
    return ECE(bins=n_bins).measure(x, yi), MCE(bins=n_bins).measure(x, yi)


def torchmetrics_ece_mce(c: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float]:
    x = _below_interior_edges(c, n_bins)
    x = np.where(x == 1.0, 1.0 - 1e-12, x)  # issue #3510: 1.0 would get a phantom bin of its own
    preds, target = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    l1 = binary_calibration_error(preds, target, n_bins=n_bins, norm="l1")
    mx = binary_calibration_error(preds, target, n_bins=n_bins, norm="max")
    return float(l1), float(mx)


def _random_set(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.beta(5, 2, size=n)
    return c, (rng.random(n) < c**1.5).astype(np.float64)


def _edge_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    k15 = np.arange(16) / 15
    k10 = np.arange(11) / 10
    mixed_c, mixed_y = _random_set(7, 300)
    mixed_c[:40] = np.repeat([0.0, 1.0, 1 / 15, 7 / 15, 0.3, 0.9, 1 / 3, 14 / 15], 5)
    return {
        "zeros": (np.array([0.0, 0.0, 0.0, 0.3, 0.7]), np.array([1.0, 0.0, 1.0, 1.0, 0.0])),
        "ones": (np.array([1.0, 1.0, 1.0, 0.96, 0.5]), np.array([1.0, 0.0, 1.0, 1.0, 0.0])),
        "edges_k15": (k15, (np.arange(16) % 2).astype(np.float64)),
        "edges_k10": (k10, (np.arange(11) % 3 == 0).astype(np.float64)),
        "one_bin": (np.array([0.49, 0.5, 0.5, 0.51, 0.52]), np.array([1.0, 1.0, 0.0, 1.0, 0.0])),
        "all_one": (np.ones(6), np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])),
        "mixed": (mixed_c, mixed_y),
    }


@pytest.mark.parametrize("n_bins", [15, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matches_references(seed: int, n_bins: int) -> None:
    c, y = _random_set(seed)
    ours = (ece(c, y, n_bins), mce(c, y, n_bins))
    # random confidences never sit exactly on an edge, so the references see the raw input here
    preds, target = torch.from_numpy(c), torch.from_numpy(y.astype(np.int64))
    assert ours[0] == pytest.approx(ECE(bins=n_bins).measure(c, y.astype(np.int64)), abs=TOL, rel=0)
    assert ours[1] == pytest.approx(MCE(bins=n_bins).measure(c, y.astype(np.int64)), abs=TOL, rel=0)
    assert ours[0] == pytest.approx(float(binary_calibration_error(preds, target, n_bins, "l1")), abs=TOL, rel=0)
    assert ours[1] == pytest.approx(float(binary_calibration_error(preds, target, n_bins, "max")), abs=TOL, rel=0)


@pytest.mark.parametrize("n_bins", [15, 10])
@pytest.mark.parametrize("name", list(_edge_sets()))
def test_edge_cases_match_references(name: str, n_bins: int) -> None:
    c, y = _edge_sets()[name]
    ours = np.array([ece(c, y, n_bins), mce(c, y, n_bins)])
    np.testing.assert_allclose(ours, netcal_ece_mce(c, y, n_bins), atol=TOL, rtol=0)
    np.testing.assert_allclose(ours, torchmetrics_ece_mce(c, y, n_bins), atol=TOL, rtol=0)


def test_zero_and_all_in_one_bin_match_references_unmodified() -> None:
    for name in ("zeros", "one_bin"):
        c, y = _edge_sets()[name]
        preds, target = torch.from_numpy(c), torch.from_numpy(y.astype(np.int64))
        assert ece(c, y) == pytest.approx(ECE(bins=15).measure(c, y.astype(np.int64)), abs=TOL, rel=0)
        assert ece(c, y) == pytest.approx(float(binary_calibration_error(preds, target, 15, "l1")), abs=TOL, rel=0)


def test_edge_convention_by_hand() -> None:
    edges = bin_edges(np.array([0.5]), 15)
    np.testing.assert_array_equal(edges, np.arange(16) / 15)
    k = np.arange(1, 15)
    np.testing.assert_array_equal(bin_index(k / 15, edges), k - 1)  # on an interior edge: the bin below
    np.testing.assert_array_equal(bin_index([0.0, 1.0, 0.5, 1e-300], edges), [0, 14, 7, 0])
    # "ones": last bin (14/15, 1] holds 1, 1, 1, 0.96 with 3 correct; 0.5 wrong sits alone in bin 7
    c, y = _edge_sets()["ones"]
    conf_last = (3 + 0.96) / 4
    assert ece(c, y) == pytest.approx(4 / 5 * abs(0.75 - conf_last) + 1 / 5 * 0.5, abs=1e-15)
    assert mce(c, y) == pytest.approx(0.5, abs=1e-15)


def test_ece_zero_for_exactly_calibrated_set() -> None:
    c = np.repeat([0.25, 0.5, 0.75, 1.0], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=np.float64)
    assert ece(c, y) == pytest.approx(0.0, abs=1e-15)
    assert mce(c, y) == pytest.approx(0.0, abs=1e-15)


def test_ece_small_for_bernoulli_calibrated_set() -> None:
    rng = np.random.default_rng(3)
    c = rng.random(200_000)
    y = (rng.random(c.size) < c).astype(np.float64)
    assert ece(c, y) < 0.01  # sampling noise only: about 0.003 at this size


def test_always_confident_always_wrong() -> None:
    c, y = np.ones(50), np.zeros(50)
    assert ece(c, y) == 1.0
    assert mce(c, y) == 1.0
    assert brier(c, y) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_mce_at_least_ece(seed: int) -> None:
    c, y = _random_set(seed, 500)
    for strategy in ("uniform", "quantile"):
        assert mce(c, y, 15, strategy) >= ece(c, y, 15, strategy)


def test_ace_equal_mass_bins() -> None:
    rng = np.random.default_rng(4)
    c = np.sort(rng.random(150))
    y = (rng.random(150) < c).astype(np.float64)
    d = reliability_diagram(c, y, 15, "quantile")
    np.testing.assert_array_equal(d.counts, np.full(15, 10))
    expected = np.mean(np.abs(y.reshape(15, 10).mean(1) - c.reshape(15, 10).mean(1)))
    assert ace(c, y) == pytest.approx(expected, abs=1e-15)
    assert ace(c, y) == pytest.approx(ece(c, y, 15, "quantile"), abs=0)


def test_quantile_edges_with_ties_make_point_mass_bins() -> None:
    c = np.concatenate([np.linspace(0.1, 0.9, 10), np.ones(10)])
    edges = bin_edges(c, 4, "quantile")
    assert edges.shape == (5,) and edges[0] == 0.0 and edges[-1] == 1.0 and np.all(np.diff(edges) >= 0)
    d = reliability_diagram(c, np.ones_like(c), 4, "quantile")
    assert d.counts.sum() == 20
    # edges [0, e1, 0.95, 1, 1]: all ten 1.0s go to the zero-width bin [1, 1], (0.95, 1] stays empty
    np.testing.assert_array_equal(d.counts, [5, 5, 0, 10])
    assert d.mean_confidence[3] == 1.0 and math.isnan(d.accuracy[2])


def test_brier_and_nll_worked_examples() -> None:
    assert brier([0.9, 0.6, 0.2], [1, 0, 0]) == pytest.approx((0.01 + 0.36 + 0.04) / 3, abs=1e-15)
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
    assert brier_multiclass(probs, np.array([0, 1])) == pytest.approx((0.14 + 0.86) / 2, abs=1e-15)
    assert nll([1.0, 0.5, 0.25]) == pytest.approx(math.log(2), abs=1e-15)
    assert nll([0.0]) == pytest.approx(-math.log(1e-12), abs=1e-12)
    assert nll([0.0], eps=1e-3) == pytest.approx(-math.log(1e-3), abs=1e-12)


def test_histogram_calibrator() -> None:
    c = np.array([0.05, 0.1, 0.55, 0.6, 0.95])
    y = np.array([0.0, 0.0, 1.0, 0.0, 1.0])
    cal = HistogramCalibrator(n_bins=4)
    assert cal.get_params() == {"n_bins": 4, "strategy": "uniform"}
    with pytest.raises(ValueError, match="not fitted"):
        cal.predict(c)
    assert cal.fit(c, y) is cal
    np.testing.assert_array_equal(cal.edges_, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(cal.bin_counts_, [2, 0, 2, 1])
    np.testing.assert_array_equal(cal.bin_accuracy_, [0.0, np.nan, 0.5, 1.0])
    # bin 1 = (0.25, 0.5] was empty, so 0.3 and 0.5 (on its upper edge) fall back to themselves
    np.testing.assert_array_equal(cal.predict([0.3, 0.2, 0.7, 1.0, 0.0, 0.5]), [0.3, 0.0, 0.5, 1.0, 0.0, 0.5])
    np.testing.assert_array_equal(reliability_scores(c, y, n_bins=4), [0.0, 0.0, 0.5, 0.5, 1.0])
    assert cal.set_params(strategy="quantile").strategy == "quantile"


def test_reliability_diagram_counts_and_empty_bins() -> None:
    c, y = _random_set(5, 300)
    d = reliability_diagram(c, y, 15)
    assert d.counts.sum() == c.size and d.edges.shape == (16,)
    empty = d.counts == 0
    assert empty.any()  # beta(5, 2) leaves the lowest bins empty
    assert np.isnan(d.accuracy[empty]).all() and np.isnan(d.mean_confidence[empty]).all()
    assert not np.isnan(d.accuracy[~empty]).any()
    out = d.to_dict()
    json.dumps(out)
    assert out["accuracy"][0] is None and sum(out["counts"]) == c.size


def test_calibration_summary() -> None:
    c, y = _random_set(6, 400)
    s = calibration_summary(c, y, n_bins=10)
    assert set(s) == {"ece", "ace", "mce", "brier", "n_bins", "diagram", "definitions"}
    assert s["ece"] == ece(c, y, 10) and s["ace"] == ace(c, y, 10) and s["mce"] == mce(c, y, 10)
    assert s["brier"] == brier(c, y) and s["n_bins"] == 10 and len(s["diagram"]["counts"]) == 10
    assert set(s["definitions"]) == {"ece", "ace", "mce", "brier", "n_bins", "diagram"}
    json.dumps(s)


@pytest.mark.parametrize(
    ("confidence", "correct"),
    [
        ([0.5, 0.6], [1.0]),  # length mismatch
        ([], []),  # empty
        ([0.5, 1.2], [1.0, 0.0]),  # confidence > 1
        ([-0.1, 0.5], [1.0, 0.0]),  # confidence < 0
        ([np.nan, 0.5], [1.0, 0.0]),  # NaN
        ([[0.5, 0.5]], [[1.0, 0.0]]),  # not 1-D
        ([0.5, 0.6], [1.0, 2.0]),  # correct outside [0, 1]
    ],
)
def test_bad_inputs_raise(confidence: list, correct: list) -> None:
    for fn in (ece, mce, ace, brier, reliability_diagram, calibration_summary, reliability_scores):
        with pytest.raises(ValueError):
            fn(confidence, correct)


def test_bad_arguments_raise() -> None:
    c, y = [0.2, 0.8], [0.0, 1.0]
    for kwargs in ({"n_bins": 0}, {"strategy": "kmeans"}, {"n_bins": 2.5}):
        with pytest.raises(ValueError):
            ece(c, y, **kwargs)
    with pytest.raises(ValueError):
        bin_index([0.5], [0.0, 0.6, 0.4, 1.0])
    with pytest.raises(ValueError):
        brier_multiclass([[0.5, 0.5]], np.array([2]))
    with pytest.raises(ValueError):
        brier_multiclass([0.5, 0.5], np.array([0]))
    with pytest.raises(ValueError):
        nll([1.5])
    with pytest.raises(ValueError):
        nll([0.5], eps=0.0)
