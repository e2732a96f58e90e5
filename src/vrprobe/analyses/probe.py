"""Hidden-state reliability probes: one forward pass per answer, scored against held-out samples.

Features (one vector per decoder layer, read in the same forward that gives the answer; `score_batch(hidden=True)`):
- `last`: the layer's output at the answer position (the last prompt position);
- `image_mean`: the layer's output averaged over the image-token positions.

Targets:
- `correct` (needs labels): the answer is correct.
- `stable` (label-free): the answer survives image noise — the prediction on the image with Gaussian pixel noise of
  std `STABILITY_NOISE` (seeded, as the `?noise=` shift) equals the clean prediction. Chosen because it needs no
  reference answers, measures what the attention belief is about (whether the answer rests on the image evidence
  robustly), and costs an extra forward per noise draw at test time, which the probe replaces with one read of the
  clean forward's hidden states (the semantic-entropy-probe idea: learn an expensive uncertainty from one pass).

`ReliabilityProbe` (scikit-learn style: parameters in `__init__`, work in `fit`): per layer, standardisation and
L2 logistic regression with the regularisation strength chosen by stratified k-fold cross-validation (AUROC) on the
training samples only; `best_layer_` is the layer with the best cross-validated AUROC, again on training samples
only. `reliability` = the probe's probability of the positive class (correct / stable) at that layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vrprobe.errors import UsageError
from vrprobe.metrics.selective import auroc

FEATURES = ("last", "image_mean")
TARGETS = ("correct", "stable")
STABILITY_NOISE = 0.3
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class LayerFit:
    """One layer's fitted probe: its cross-validated AUROC on the training samples and the chosen inverse
    regularisation strength C."""

    layer: int
    cv_auroc: float
    C: float


class ReliabilityProbe:
    """Logistic-regression probe per decoder layer on standardised hidden states (see the module docstring).

    Parameters: `layers` (None: all), `Cs` (candidate inverse regularisation strengths), `cv` (folds, reduced to the
    minority class count when smaller), `seed` (fold shuffling). `fit(X, y)`: X [n, L, D] features, y [n] in {0, 1}.
    Fitted attributes: `layers_`, `fits_` (per layer, `LayerFit`), `best_layer_`."""

    def __init__(
        self, layers: Sequence[int] | None = None, Cs: Sequence[float] = DEFAULT_CS, cv: int = 5, seed: int = 0
    ) -> None:
        self.layers = layers
        self.Cs = Cs
        self.cv = cv
        self.seed = seed

    def fit(self, X: ArrayLike, y: ArrayLike) -> ReliabilityProbe:
        from sklearn.model_selection import StratifiedKFold

        X, y = check_xy(X, y)
        minority = int(min(y.sum(), len(y) - y.sum()))
        if minority < 2:
            raise UsageError(
                f"the probe needs at least 2 training samples of each class, got {int(y.sum())} positive and "
                f"{int(len(y) - y.sum())} negative: use more training samples"
            )
        layers = list(range(X.shape[1])) if self.layers is None else [int(x) for x in self.layers]
        bad = [x for x in layers if not 0 <= x < X.shape[1]]
        if bad:
            raise UsageError(f"probe layer {bad[0]} is out of range: the model has layers 0..{X.shape[1] - 1}")
        folds = list(StratifiedKFold(min(self.cv, minority), shuffle=True, random_state=self.seed).split(X[:, 0], y))
        self.models_, self.fits_ = {}, {}
        for layer in layers:
            scores = [
                np.mean(
                    [
                        auroc(layer_model(C).fit(X[tr, layer], y[tr]).decision_function(X[te, layer]), y[te])
                        for tr, te in folds
                    ]
                )
                for C in self.Cs
            ]
            best = int(np.nanargmax(scores))
            self.models_[layer] = layer_model(self.Cs[best]).fit(X[:, layer], y)
            self.fits_[layer] = LayerFit(layer, float(scores[best]), float(self.Cs[best]))
        self.layers_ = layers
        self.best_layer_ = max(layers, key=lambda x: (self.fits_[x].cv_auroc, -x))
        return self

    def predict_proba(self, X: ArrayLike, layer: int | None = None) -> np.ndarray:
        """Probability of the positive class [n] at `layer` (default: `best_layer_`)."""
        if not hasattr(self, "models_"):
            raise UsageError("the probe is not fitted: call fit(X, y) first")
        layer = self.best_layer_ if layer is None else layer
        if layer not in self.models_:
            raise UsageError(f"the probe was not fitted at layer {layer} (fitted: {self.layers_})")
        X = np.asarray(X, dtype=np.float64)
        return self.models_[layer].predict_proba(X[:, layer])[:, 1]


def layer_model(C: float) -> Any:
    """Standardisation then L2-regularised logistic regression with inverse strength C (lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))


def check_xy(X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Probe features as float64 [samples, layers, dim] and 0/1 labels [samples]; one `UsageError` otherwise."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if X.ndim != 3 or X.shape[0] != y.shape[0]:
        raise UsageError(f"probe features must be [samples, layers, dim] with one label per sample, got {X.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise UsageError("probe labels must be 0 or 1")
    if not np.isfinite(X).all():
        raise UsageError("probe features hold NaN or inf")
    return X, y


def features(records: Sequence[dict], kind: str) -> np.ndarray:
    """Stack the records' hidden-state features of `kind` (`last` or `image_mean`) into [n, L, D]."""
    if kind not in FEATURES:
        raise UsageError(f"unknown probe features '{kind}' (known: {', '.join(FEATURES)})")
    return np.stack([r[f"hidden_{kind}"] for r in records])
