"""Selective prediction: how well a reliability signal ranks right answers above wrong ones, and what accuracy remains
when the least trusted answers are set aside.

A **signal** is any per-sample score where higher means "trust more" (confidence, the probe's reliability, the
logit margin; for attention sharpness pass the negated entropy, since lower entropy is the belief's "sharper").

- `auroc`: P(signal of a random correct answer > signal of a random incorrect one) + ½·P(equal) — the
  Mann–Whitney statistic, in [0, 1]; 0.5 = no better than chance. NaN when either class is empty.
- `auroc_interval`: percentile-bootstrap interval of `auroc` (samples resampled with replacement, seeded).
- `risk_coverage`: answers sorted by signal, most trusted first (ties kept together, see below); at coverage k/n the
  risk is the error rate of the k most trusted answers.
- `aurc`: area under the risk–coverage curve, the mean of the risk over k = 1..n (Geifman et al., 2019); lower is
  better; the error rate of a signal that ranks perfectly is the minimum.
- `accuracy_at_coverage`: accuracy of the ⌈c·n⌉ most trusted answers.
Tied signals are ordered as a block: the risk at a k inside a tie is the tie's expected value when its members are in
random order (the block's mean error spread evenly), so a constant signal gives risk = overall error rate at every k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from vrprobe.errors import UsageError

COVERAGES = (0.5, 0.8, 0.9)
SIGNALS = {"confidence": "confidence", "sharpness": "sharpness", "margin": "margin", "probe": "reliability"}
"""The study's reliability signals: name -> the record column holding it (higher = more trusted, after `selective`
negates sharpness)."""


def _inputs(signal: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(signal, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise UsageError(f"signal has {s.size} values but correct has {y.size}")
    if not np.isfinite(s).all():
        raise UsageError("signal holds NaN or inf")
    if not np.isin(y, (0.0, 1.0)).all():
        raise UsageError("correct must be 0 or 1")
    return s, y


def auroc(signal: ArrayLike, correct: ArrayLike) -> float:
    """P(signal_correct > signal_incorrect) + ½·P(equal), from midranks (the Mann–Whitney U / (n₁·n₀))."""
    s, y = _inputs(signal, correct)
    n1, n0 = int(y.sum()), int((1 - y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auroc_interval(
    signal: ArrayLike, correct: ArrayLike, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `auroc` at `level` (resamples in which one class is missing are dropped)."""
    s, y = _inputs(signal, correct)
    if n_boot < 1 or not 0 < level < 1:
        raise UsageError("n_boot must be ≥ 1 and level in (0, 1)")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, s.size, s.size)
        value = auroc(s[idx], y[idx]) if s.size else math.nan
        if not math.isnan(value):
            values.append(value)
    if not values:
        return (math.nan, math.nan)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def risk_coverage(signal: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(coverage [n], risk [n]): coverage k/n for k = 1..n and the error rate of the k most trusted answers, ties
    averaged as the module docstring says."""
    s, y = _inputs(signal, correct)
    n = s.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-s, kind="stable")
    s, err = s[order], 1.0 - y[order]
    # within a block of tied signals, each position holds the block's mean error
    _, start, counts = np.unique(-s, return_index=True, return_counts=True)
    spread = np.empty(n)
    for a, c in zip(start, counts, strict=True):
        spread[a : a + c] = err[a : a + c].mean()
    k = np.arange(1, n + 1)
    return k / n, np.cumsum(spread) / k


def aurc(signal: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk–coverage curve: mean risk over coverages 1/n..1 (lower is better)."""
    _, risk = risk_coverage(signal, correct)
    return float(risk.mean()) if risk.size else math.nan


def accuracy_at_coverage(signal: ArrayLike, correct: ArrayLike, coverage: float) -> float:
    """Accuracy of the ⌈coverage·n⌉ most trusted answers (ties averaged)."""
    if not 0 < coverage <= 1:
        raise UsageError(f"coverage must be in (0, 1], got {coverage}")
    _, risk = risk_coverage(signal, correct)
    if not risk.size:
        return math.nan
    k = math.ceil(coverage * risk.size - 1e-9)
    return float(1 - risk[k - 1])


@dataclass
class Selective:
    """One signal's selective-prediction summary (see the module docstring for each definition)."""

    signal: str
    n: int
    auroc: float
    ci: tuple[float, float]
    aurc: float
    accuracy_at: dict[float, float]

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "signal": self.signal,
            "n": self.n,
            "auroc": clean(self.auroc),
            "ci": [clean(self.ci[0]), clean(self.ci[1])],
            "aurc": clean(self.aurc),
            **{f"accuracy_at_{round(c * 100)}": clean(v) for c, v in self.accuracy_at.items()},
        }


def selective(name: str, signal: ArrayLike, correct: ArrayLike, n_boot: int = 1000, seed: int = 0) -> Selective:
    """AUROC with its bootstrap interval, AURC and accuracy at 50 / 80 / 90 % coverage for one signal."""
    s, y = _inputs(signal, correct)
    return Selective(
        signal=name,
        n=int(s.size),
        auroc=auroc(s, y),
        ci=auroc_interval(s, y, n_boot=n_boot, seed=seed),
        aurc=aurc(s, y),
        accuracy_at={c: accuracy_at_coverage(s, y, c) for c in COVERAGES},
    )


def logit_margin(log_probs: ArrayLike) -> np.ndarray:
    """Per sample, top-1 − top-2 log-probability over the candidates (nats; `log_probs` [n, C], C ≥ 2)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise UsageError("logit_margin needs [samples, candidates ≥ 2] log-probabilities")
    top = np.sort(lp, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]
