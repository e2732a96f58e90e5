"""Score calibrators kept as plain numbers: fitted once, stored as JSON (`to_dict` / `from_dict`), applied with numpy.

A raw score s ∈ [0, 1] (e.g. a probe's probability that the answer is correct) is mapped to a calibrated probability:

- `PlattCalibrator`: p = σ(a · logit(s) + b), with σ the logistic function and logit(s) = log(s / (1 − s)) after
  clipping s to [`EPS`, 1 − `EPS`]; (a, b) maximise the log likelihood of the labels (scikit-learn's
  `LogisticRegression(C=PLATT_C)` on the single feature logit(s): practically unregularised).
- `IsotonicCalibrator`: the non-decreasing step function fitted by scikit-learn's `IsotonicRegression(out_of_bounds=
  "clip", y_min=0, y_max=1)`, kept as its breakpoints `X_thresholds_`, `y_thresholds_` and applied as their linear
  interpolation `np.interp` (constant beyond the first and last breakpoint), which is what `IsotonicRegression.predict`
  computes.

`choose_calibrator` picks, between the two fitted on one part of the data, the one with the lower mean log loss
−mean(y log p + (1 − y) log(1 − p)) on another part, with p clipped to [`EPS`, 1 − `EPS`]; on a tie, Platt (two
numbers, smoother). Nothing here pickles: the fitted state is a few floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

EPS = 1e-6
PLATT_C = 1e10
KINDS = ("platt", "isotonic")


def _scores(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(s).all():
        raise ValueError("calibrator scores hold NaN or inf")
    return s


def _labels(scores: np.ndarray, y: ArrayLike) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape != scores.shape:
        raise ValueError(f"scores and labels differ in length ({scores.size} vs {y.size})")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("calibrator labels must be 0 or 1")
    return y


def logit(scores: ArrayLike) -> np.ndarray:
    """logit(s) = log(s / (1 − s)) with s clipped to [EPS, 1 − EPS] (so ±13.8 at most)."""
    s = np.clip(_scores(scores), EPS, 1.0 - EPS)
    return np.log(s) - np.log1p(-s)


def log_loss(p: ArrayLike, y: ArrayLike) -> float:
    """Mean binary log loss −mean(y log p + (1 − y) log(1 − p)), nats, with p clipped to [EPS, 1 − EPS]."""
    q = np.clip(_scores(p), EPS, 1.0 - EPS)
    t = _labels(q, y)
    return float(-np.mean(t * np.log(q) + (1.0 - t) * np.log1p(-q)))


class PlattCalibrator:
    """p = σ(a · logit(s) + b) (module docstring). Parameter: `C` (inverse L2 strength on a; default practically
    none). Fitted attributes: `coef_` (a), `intercept_` (b)."""

    kind = "platt"

    def __init__(self, C: float = PLATT_C) -> None:
        self.C = C

    def fit(self, scores: ArrayLike, y: ArrayLike) -> PlattCalibrator:
        from sklearn.linear_model import LogisticRegression

        z = logit(scores)
        y = _labels(z, y)
        if len(np.unique(y)) < 2:
            raise ValueError("Platt calibration needs labels of both classes")
        lr = LogisticRegression(C=self.C, max_iter=10_000, tol=1e-10).fit(z[:, None], y)
        self.coef_ = float(lr.coef_[0, 0])
        self.intercept_ = float(lr.intercept_[0])
        return self

    def predict(self, scores: ArrayLike) -> np.ndarray:
        """Calibrated probabilities, one per score."""
        t = self.coef_ * logit(scores) + self.intercept_
        return np.exp(-np.logaddexp(0.0, -t))  # σ(t), without overflow

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "C": float(self.C), "coef": self.coef_, "intercept": self.intercept_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlattCalibrator:
        c = cls(C=float(d["C"]))
        c.coef_, c.intercept_ = float(d["coef"]), float(d["intercept"])
        return c


class IsotonicCalibrator:
    """A non-decreasing step function of s (module docstring), kept as breakpoints. Fitted attributes:
    `X_thresholds_`, `y_thresholds_` (float64 arrays, X increasing, y non-decreasing in [0, 1])."""

    kind = "isotonic"

    def fit(self, scores: ArrayLike, y: ArrayLike) -> IsotonicCalibrator:
        from sklearn.isotonic import IsotonicRegression

        s = _scores(scores)
        y = _labels(s, y)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
        self.X_thresholds_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def predict(self, scores: ArrayLike) -> np.ndarray:
        """Calibrated probabilities, one per score: the breakpoints' linear interpolation, constant outside them."""
        s = np.clip(_scores(scores), self.X_thresholds_[0], self.X_thresholds_[-1])
        return np.interp(s, self.X_thresholds_, self.y_thresholds_)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "X_thresholds": self.X_thresholds_.tolist(),
            "y_thresholds": self.y_thresholds_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IsotonicCalibrator:
        c = cls()
        c.X_thresholds_ = np.asarray(d["X_thresholds"], dtype=np.float64)
        c.y_thresholds_ = np.asarray(d["y_thresholds"], dtype=np.float64)
        if c.X_thresholds_.ndim != 1 or c.X_thresholds_.shape != c.y_thresholds_.shape or not c.X_thresholds_.size:
            raise ValueError("isotonic calibrator: X_thresholds and y_thresholds must be equal-length, non-empty lists")
        return c


Calibrator = PlattCalibrator | IsotonicCalibrator


def calibrator_from_dict(d: dict[str, Any]) -> Calibrator:
    """The calibrator a `to_dict()` wrote (its `kind` says which)."""
    kinds: dict[str, Any] = {"platt": PlattCalibrator, "isotonic": IsotonicCalibrator}
    if d.get("kind") not in kinds:
        raise ValueError(f"unknown calibrator kind {d.get('kind')!r} (known: {', '.join(KINDS)})")
    return kinds[d["kind"]].from_dict(d)


def choose_calibrator(
    scores_fit: ArrayLike, y_fit: ArrayLike, scores_held: ArrayLike, y_held: ArrayLike
) -> tuple[Calibrator, dict[str, float]]:
    """Fit Platt and isotonic on (`scores_fit`, `y_fit`); return the one with the lower held-out log loss on
    (`scores_held`, `y_held`) (a tie goes to Platt) and both held-out losses by kind."""
    fitted: list[Calibrator] = [PlattCalibrator().fit(scores_fit, y_fit), IsotonicCalibrator().fit(scores_fit, y_fit)]
    losses = {c.kind: log_loss(c.predict(scores_held), y_held) for c in fitted}
    best = fitted[0] if losses["platt"] <= losses["isotonic"] else fitted[1]
    return best, losses
