"""Confidence calibration: reliability diagrams, ECE / MCE / ACE, Brier, NLL and a per-sample reliability score.

Inputs are per-answer pairs: ``confidence`` c_i ∈ [0, 1], the probability the model gives its own predicted answer,
and ``correct`` y_i ∈ [0, 1] (1 = the answer was right; fractional credit is allowed). Everything is float64 numpy.

Binning convention (every binned quantity here uses it). With edges 0 = e_0 ≤ e_1 ≤ … ≤ e_B = 1, bin b (0-based) is
the right-closed interval (e_b, e_{b+1}], except that c = 0 lands in the FIRST bin and c = 1 in the LAST bin, so
every confidence in [0, 1] falls in exactly one bin. A confidence exactly on an interior edge k/B goes to the bin
below it (bin k−1), as in Guo et al. (2017)'s reference code. Uniform edges are e_k = k/B (correctly rounded, so a
confidence computed as k/B sits exactly on its edge). Quantile edges can repeat when confidences tie; a repeated
edge value v is a point mass: every confidence equal to v goes to the first zero-width bin [v, v], the other
zero-width bins stay empty.
Reference libraries differ at the edges: netcal and torchmetrics (1.9) bin as [e_b, e_{b+1}), so they put a
confidence on an interior edge into the bin above; torchmetrics puts c = 1 into a phantom (B+1)-th bin of its own
(torchmetrics issue #3510), and older torchmetrics crashed on c = 0 (issue #1646).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

Strategy = Literal["uniform", "quantile"]
_STRATEGIES = ("uniform", "quantile")


def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _check_unit(name: str, arr: np.ndarray) -> None:
    ok = (arr >= 0.0) & (arr <= 1.0)  # NaN fails both comparisons
    if not np.all(ok):
        raise ValueError(f"{name} must lie in [0, 1]; found {arr[~ok][0]!r}")


def _validate(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    c = _as_1d("confidence", confidence)
    y = _as_1d("correct", correct)
    if c.shape != y.shape:
        raise ValueError(f"confidence and correct differ in length ({c.size} vs {y.size})")
    _check_unit("confidence", c)
    _check_unit("correct", y)
    return c, y


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def bin_edges(confidence: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform") -> np.ndarray:
    """The n_bins + 1 bin edges on [0, 1] (float64, non-decreasing, first 0, last 1).

    ``"uniform"``: equal width, e_k = k / n_bins (the confidences are only validated).
    ``"quantile"``: equal mass, e_k = quantile(confidence, k / n_bins) (numpy's linear interpolation), then e_0 := 0
    and e_B := 1. Ties make edges repeat; see the module docstring for how a repeated edge (point mass) is binned.
    """
    c = _as_1d("confidence", confidence)
    _check_unit("confidence", c)
    _check_n_bins(n_bins)
    q = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    if strategy == "uniform":
        return q
    if strategy == "quantile":
        edges = np.quantile(c, q)
        edges[0], edges[-1] = 0.0, 1.0
        return np.clip(np.maximum.accumulate(edges), 0.0, 1.0)
    raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")


def bin_index(confidence: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """0-based bin of each confidence: bin b is (e_b, e_{b+1}], c = 0 → first bin, c = 1 → last bin.

    A confidence equal to a repeated edge value goes to the first zero-width bin at that value (point mass).
    Returns an int64 array in [0, len(edges) − 2].
    """
    c = _as_1d("confidence", confidence)
    _check_unit("confidence", c)
    e = _as_1d("edges", edges)
    if e.size < 2 or e[0] != 0.0 or e[-1] != 1.0 or np.any(np.diff(e) < 0):
        raise ValueError("edges must be non-decreasing, start at 0, end at 1 and have at least 2 entries")
    n_bins = e.size - 1
    idx = np.clip(np.searchsorted(e, c, side="left") - 1, 0, n_bins - 1)
    upper = e[idx + 1]
    nxt = np.minimum(idx + 1, n_bins - 1)
    to_point_mass = (c == upper) & (idx + 1 < n_bins) & (e[nxt] == e[nxt + 1]) & (e[idx] < upper)
    return (idx + to_point_mass).astype(np.int64)


@dataclass
class ReliabilityDiagram:
    """Per-bin statistics: ``edges`` [B+1]; ``counts`` n_b [B]; ``mean_confidence`` conf_b = mean c over the bin;
    ``accuracy`` acc_b = mean y over the bin. conf_b and acc_b are NaN for empty bins."""

    edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray

    def to_dict(self) -> dict[str, list]:
        """JSON-able lists; NaN becomes None."""

        def clean(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a]

        return {
            "edges": [float(v) for v in self.edges],
            "counts": [int(v) for v in self.counts],
            "mean_confidence": clean(self.mean_confidence),
            "accuracy": clean(self.accuracy),
        }


def _diagram(c: np.ndarray, y: np.ndarray, edges: np.ndarray) -> ReliabilityDiagram:
    idx = bin_index(c, edges)
    n_bins = edges.size - 1
    counts = np.bincount(idx, minlength=n_bins)
    nonempty = counts > 0

    def mean_of(v: np.ndarray) -> np.ndarray:
        sums = np.bincount(idx, weights=v, minlength=n_bins)
        return np.divide(sums, counts, out=np.full(n_bins, np.nan), where=nonempty)

    return ReliabilityDiagram(np.asarray(edges, dtype=np.float64), counts.astype(np.int64), mean_of(c), mean_of(y))


def reliability_diagram(
    confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform"
) -> ReliabilityDiagram:
    """Bin the confidences (see ``bin_edges`` / ``bin_index``) and report n_b, conf_b and acc_b per bin.

    Σ_b n_b = N. Empty bins have NaN conf_b / acc_b. Raises ValueError on mismatched, empty or out-of-range input.
    """
    c, y = _validate(confidence, correct)
    return _diagram(c, y, bin_edges(c, n_bins, strategy))


def _gaps(d: ReliabilityDiagram) -> tuple[np.ndarray, np.ndarray]:
    nonempty = d.counts > 0
    return d.counts[nonempty].astype(np.float64), np.abs(d.accuracy[nonempty] - d.mean_confidence[nonempty])


def _ece(d: ReliabilityDiagram) -> float:
    counts, gaps = _gaps(d)
    return float(np.sum(counts / counts.sum() * gaps))


def _mce(d: ReliabilityDiagram) -> float:
    return float(np.max(_gaps(d)[1]))


def ece(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform") -> float:
    """Expected calibration error: ECE = Σ_b (n_b / N) · |acc_b − conf_b| over non-empty bins.

    Units: probability, in [0, 1]; 0 = perfectly calibrated per bin. One sample per bin gives |y − c| averaged.
    Uniform bins by default (``strategy="quantile"`` gives ACE). Binning convention: module docstring.
    """
    return _ece(reliability_diagram(confidence, correct, n_bins, strategy))


def mce(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform") -> float:
    """Maximum calibration error: MCE = max_b |acc_b − conf_b| over non-empty bins.

    Units: probability, in [0, 1]; always ≥ ECE on the same bins. Sensitive to sparsely populated bins.
    """
    return _mce(reliability_diagram(confidence, correct, n_bins, strategy))


def ace(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """Adaptive calibration error: ECE with equal-mass bins, Σ_b (n_b / N) · |acc_b − conf_b|, quantile edges.

    Units: probability, in [0, 1]. With N divisible by n_bins and no ties every n_b = N / n_bins; ties make
    point-mass bins (see module docstring), so bins can be unequal.
    """
    return ece(confidence, correct, n_bins, strategy="quantile")


def brier(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Top-label Brier score: (1/N) Σ_i (c_i − y_i)², the squared error of the predicted answer's confidence.

    Units: squared probability, in [0, 1]; 0 is best. This is not the multi-class Brier (see ``brier_multiclass``).
    """
    c, y = _validate(confidence, correct)
    return float(np.mean((c - y) ** 2))


def brier_multiclass(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multi-class Brier score: (1/N) Σ_i Σ_k (p_ik − 1[k = y_i])².

    ``probs`` [N, C] in [0, 1] (rows should sum to 1; not enforced), ``labels`` [N] integers in [0, C).
    Units: squared probability, in [0, 2] for normalised rows; 0 is best.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"probs must be a non-empty [N, C] array, got shape {p.shape}")
    _check_unit("probs", p.ravel())
    lab = np.asarray(labels)
    if lab.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer) or np.any((lab < 0) | (lab >= p.shape[1])):
        raise ValueError(f"labels must be integers in [0, {p.shape[1]})")
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), lab] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def nll(p_true: ArrayLike, eps: float = 1e-12) -> float:
    """Negative log-likelihood: −(1/N) Σ_i log(clip(p_i, eps, 1)), p_i = probability given to the correct class.

    Units: nats; 0 is best. Clipping at ``eps`` keeps p_i = 0 finite (it contributes −log eps ≈ 27.6 nats).
    """
    p = _as_1d("p_true", p_true)
    _check_unit("p_true", p)
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"eps must be in (0, 1], got {eps!r}")
    return float(-np.mean(np.log(np.clip(p, eps, 1.0))))


class HistogramCalibrator:
    """Histogram-binning calibrator; its output is the per-sample reliability score.

    Reliability score = estimated P(correct | confidence): the empirical accuracy acc_b of the training bin the
    confidence falls in (histogram-binning calibrated confidence; Zadrozny & Elkan 2001). Confidences falling in a
    bin that was empty at fit time keep their own value. scikit-learn style: hyper-parameters in ``__init__``,
    fitted attributes end in ``_`` (``edges_`` [B+1], ``bin_accuracy_`` [B] with NaN for empty bins,
    ``bin_counts_`` [B]). Binning convention: module docstring.
    """

    def __init__(self, n_bins: int = 15, strategy: Strategy = "uniform") -> None:
        self.n_bins = n_bins
        self.strategy = strategy

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters, as scikit-learn's ``get_params``."""
        return {"n_bins": self.n_bins, "strategy": self.strategy}

    def set_params(self, **params: Any) -> HistogramCalibrator:
        """Set hyper-parameters, as scikit-learn's ``set_params``."""
        for key, value in params.items():
            if key not in ("n_bins", "strategy"):
                raise ValueError(f"unknown parameter {key!r}")
            setattr(self, key, value)
        return self

    def fit(self, confidence: ArrayLike, correct: ArrayLike) -> HistogramCalibrator:
        """Estimate acc_b per bin from (confidence, correct) pairs."""
        d = reliability_diagram(confidence, correct, self.n_bins, self.strategy)
        self.edges_ = d.edges
        self.bin_accuracy_ = d.accuracy
        self.bin_counts_ = d.counts
        return self

    def predict(self, confidence: ArrayLike) -> np.ndarray:
        """Reliability score per confidence: acc_b of its bin, or the confidence itself if that bin was empty."""
        if not hasattr(self, "edges_"):
            raise ValueError("HistogramCalibrator is not fitted; call fit() first")
        c = _as_1d("confidence", confidence)
        idx = bin_index(c, self.edges_)
        return np.where(self.bin_counts_[idx] > 0, self.bin_accuracy_[idx], c)


def reliability_scores(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> np.ndarray:
    """In-sample reliability scores: ``HistogramCalibrator(n_bins).fit(c, y).predict(c)`` (uniform bins).

    Each sample gets acc_b of its own bin, an estimate of P(correct | confidence) in [0, 1]. In-sample, so the
    sample's own outcome is part of its score; fit on held-out data for an unbiased estimate.
    """
    c, y = _validate(confidence, correct)
    return HistogramCalibrator(n_bins).fit(c, y).predict(c)


def calibration_summary(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> dict[str, Any]:
    """ECE, ACE, MCE, Brier and the uniform reliability diagram in one JSON-able dict, with one-line definitions."""
    c, y = _validate(confidence, correct)
    d = _diagram(c, y, bin_edges(c, n_bins, "uniform"))
    return {
        "ece": _ece(d),
        "ace": ace(c, y, n_bins),
        "mce": _mce(d),
        "brier": brier(c, y),
        "n_bins": int(n_bins),
        "diagram": d.to_dict(),
        "definitions": {
            "ece": "sum_b (n_b/N)*|acc_b - conf_b| over non-empty equal-width bins (lo, hi]",
            "ace": "sum_b (n_b/N)*|acc_b - conf_b| over non-empty equal-mass (quantile) bins",
            "mce": "max_b |acc_b - conf_b| over non-empty equal-width bins",
            "brier": "mean_i (confidence_i - correct_i)^2 (top-label Brier score)",
            "n_bins": "number of bins B used for ece, ace, mce and the diagram",
            "diagram": "per equal-width bin: edges, counts n_b, mean_confidence conf_b, accuracy acc_b (null if empty)",
        },
    }
