"""A trained reliability probe on disk, without pickle: `save_probe`, `load_probe`, `model_fingerprint`.

A saved probe is a directory holding
- `weights.safetensors` (float64 tensors, `safetensors.numpy`): `mean` [D] and `scale` [D] (the standardisation),
  `coef` [D] and `intercept` [1] (the logistic regression) of ONE layer's probe;
- `probe.json`: `format`, the `layer`, the `feature` kind (`last` or `image_mean`, `vrprobe.analyses.probe`), the
  `target`, the `calibrator` (`vrprobe.metrics.calibrators`, its `to_dict()`), the model `fingerprint`, `metrics`,
  the `vrprobe` version and `definitions`.

Scores of a feature vector x (the layer's hidden state, as `score_batch(hidden=True)` reads it):
- raw = σ(coef · (x − mean) / scale + intercept), which is `ReliabilityProbe.predict_proba(X, layer)`;
- reliability (calibrated) = calibrator(raw).

Model fingerprint (`model_fingerprint`): `config_sha256`, the SHA-256 of the model config's canonical JSON
(`config.to_dict()`, keys sorted, without the keys that name a place or a run rather than the model: every key
starting with `_`, `transformers_version`, `name_or_path`, `dtype`, `torch_dtype`, at any depth), so a renamed or
moved copy of the same model matches; and `vocab_sha256`, the SHA-256 of the tokenizer's vocabulary
(`json.dumps(tokenizer.get_vocab(), sort_keys=True)`). A probe refuses a model whose fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vrprobe.analyses.probe import FEATURES, ReliabilityProbe, check_xy, layer_model
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.metrics.calibrators import Calibrator, calibrator_from_dict, choose_calibrator
from vrprobe.models import Adapter

FORMAT = "vrprobe-probe/1"
WEIGHTS = "weights.safetensors"
META = "probe.json"
UNSTABLE_KEYS = frozenset({"transformers_version", "name_or_path", "dtype", "torch_dtype"})
DEFINITIONS = {
    "raw": "σ(coef · (x − mean) / scale + intercept) on the layer's feature vector x: the probe's probability that "
    "the answer is correct (or stable, for a label-free probe), before calibration",
    "reliability": "calibrator(raw): the calibrated probability (Platt: σ(a · logit(raw) + b); isotonic: the step "
    "function's breakpoints, linearly interpolated)",
    "config_sha256": "SHA-256 of the model config's canonical JSON, without keys starting with '_', "
    "transformers_version, name_or_path, dtype and torch_dtype (at any depth)",
    "vocab_sha256": "SHA-256 of json.dumps(tokenizer.get_vocab(), sort_keys=True)",
}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not (str(k).startswith("_") or k in UNSTABLE_KEYS)}
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    return value


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (probe.json is strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_fingerprint(adapter: Adapter) -> dict[str, str]:
    """The model's `name` (for messages only) and its `config_sha256` and `vocab_sha256` (module docstring)."""
    config = json.dumps(_stable(adapter.model.config.to_dict()), sort_keys=True, default=str)
    vocab = json.dumps(adapter.tokenizer.get_vocab(), sort_keys=True)
    return {"name": adapter.name, "config_sha256": _sha256(config), "vocab_sha256": _sha256(vocab)}


@dataclass
class SavedProbe:
    """One layer's probe read back from disk (module docstring): `predict_raw`, `predict` (calibrated)."""

    path: Path
    layer: int
    feature: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    calibrator: Calibrator
    meta: dict[str, Any] = field(default_factory=dict)

    def _layer_features(self, features: ArrayLike) -> np.ndarray:
        X = np.asarray(features, dtype=np.float64)
        if X.ndim == 3:  # [n, L, D]: all layers, as `vrprobe.analyses.probe.features` stacks them
            if not 0 <= self.layer < X.shape[1]:
                raise UsageError(f"probe {self.path} reads layer {self.layer}, the features have {X.shape[1]} layers")
            X = X[:, self.layer]
        if X.ndim != 2 or X.shape[1] != self.coef.shape[0]:
            raise UsageError(
                f"probe {self.path} needs features [n, layers, {self.coef.shape[0]}] or [n, {self.coef.shape[0]}], "
                f"got {X.shape}"
            )
        return X

    def predict_raw(self, features: ArrayLike) -> np.ndarray:
        """The probe's probability [n] before calibration (module docstring)."""
        t = ((self._layer_features(features) - self.mean) / self.scale) @ self.coef + self.intercept
        return np.exp(-np.logaddexp(0.0, -t))

    def predict(self, features: ArrayLike) -> np.ndarray:
        """The calibrated reliability [n]: the calibrator applied to `predict_raw`."""
        return self.calibrator.predict(self.predict_raw(features))

    def check_model(self, adapter: Adapter) -> None:
        """Raise one `UsageError` line unless `adapter` has the fingerprint the probe was trained on."""
        saved, now = self.meta["fingerprint"], model_fingerprint(adapter)
        for key in ("config_sha256", "vocab_sha256"):
            if saved[key] != now[key]:
                what = "config" if key == "config_sha256" else "vocabulary"
                raise UsageError(
                    f"probe {self.path} was trained on model {saved['name']} ({what} sha256 {saved[key][:12]}), "
                    f"not on {now['name']} ({what} sha256 {now[key][:12]})"
                )


def save_probe(
    directory: Path | str,
    probe: ReliabilityProbe,
    *,
    feature: str,
    calibrator: Calibrator,
    fingerprint: dict[str, str],
    layer: int | None = None,
    target: str = "correct",
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write `probe`'s layer `layer` (default: its `best_layer_`) with `calibrator` into `directory` (created);
    return it. The standardisation and logistic regression are read from the fitted pipeline (`mean_`, `scale_`,
    `coef_`, `intercept_`)."""
    from safetensors.numpy import save_file

    if feature not in FEATURES:
        raise UsageError(f"unknown probe features '{feature}' (known: {', '.join(FEATURES)})")
    if not hasattr(probe, "models_"):
        raise UsageError("the probe is not fitted: call fit(X, y) first")
    layer = probe.best_layer_ if layer is None else int(layer)
    if layer not in probe.models_:
        raise UsageError(f"the probe was not fitted at layer {layer} (fitted: {probe.layers_})")
    scaler, lr = probe.models_[layer][0], probe.models_[layer][-1]
    scale = np.ones_like(scaler.mean_) if scaler.scale_ is None else scaler.scale_
    tensors = {
        "mean": np.ascontiguousarray(scaler.mean_, dtype=np.float64),
        "scale": np.ascontiguousarray(scale, dtype=np.float64),
        "coef": np.ascontiguousarray(lr.coef_[0], dtype=np.float64),
        "intercept": np.ascontiguousarray(lr.intercept_[:1], dtype=np.float64),
    }
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS))
    meta = {
        "format": FORMAT,
        "layer": layer,
        "feature": feature,
        "target": target,
        "C": probe.fits_[layer].C,
        "cv_auroc": probe.fits_[layer].cv_auroc,
        "calibrator": calibrator.to_dict(),
        "fingerprint": fingerprint,
        "metrics": metrics or {},
        "vrprobe": version("vrprobe"),
        "definitions": DEFINITIONS,
    }
    (out / META).write_text(json.dumps(_finite(meta), indent=2, allow_nan=False) + "\n")
    return out


def load_probe(directory: Path | str, adapter: Adapter | None = None) -> SavedProbe:
    """Read a probe `save_probe` wrote; with `adapter`, refuse (one `UsageError` line) a model it was not trained on."""
    from safetensors.numpy import load_file

    path = Path(directory)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise UsageError(f"{path} is not a saved probe: it needs {META} and {WEIGHTS}")
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT:
        raise VrprobeError(f"probe {path} has format {meta.get('format')!r}; this vrprobe reads {FORMAT}")
    w = load_file(str(path / WEIGHTS))
    saved = SavedProbe(
        path=path,
        layer=int(meta["layer"]),
        feature=str(meta["feature"]),
        mean=w["mean"],
        scale=w["scale"],
        coef=w["coef"],
        intercept=float(w["intercept"][0]),
        calibrator=calibrator_from_dict(meta["calibrator"]),
        meta=meta,
    )
    if adapter is not None:
        saved.check_model(adapter)
    return saved


def cross_fit_calibrator(
    probe: ReliabilityProbe, X: ArrayLike, y: ArrayLike, layer: int | None = None, seed: int = 0
) -> tuple[Calibrator, dict[str, Any]]:
    """A calibrator for `probe`'s layer (default: `best_layer_`) fitted on the TRAINING samples only, cross-fitted:
    each sample's raw score comes from the layer's probe (same C) refitted without that sample's fold (the probe's own
    stratified folds and seed), so no score is the fit of its own label. Platt and isotonic are fitted on a seeded,
    stratified half of these out-of-fold scores and compared by log loss on the other half (`choose_calibrator`);
    the winner is refitted on all of them. Returns it and what was chosen (`kind`, `held_out_log_loss` by kind)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    X, y = check_xy(X, y)
    layer = probe.best_layer_ if layer is None else int(layer)
    minority = int(min(y.sum(), len(y) - y.sum()))
    folds = StratifiedKFold(min(probe.cv, minority), shuffle=True, random_state=probe.seed).split(X[:, 0], y)
    raw = np.empty(len(y))
    for tr, te in folds:
        raw[te] = layer_model(probe.fits_[layer].C).fit(X[tr, layer], y[tr]).predict_proba(X[te, layer])[:, 1]
    a, b = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed)
    chosen, losses = choose_calibrator(raw[a], y[a], raw[b], y[b])
    calibrator = type(chosen)().fit(raw, y)
    info = {"kind": calibrator.kind, "method": "cross-fitted on the training data", "held_out_log_loss": losses}
    return calibrator, info
