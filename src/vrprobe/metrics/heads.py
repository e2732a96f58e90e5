"""Sharpness per layer and head: does any single head's (or layer's) attention sharpness predict correctness?

Definitions:
- **sharp**(l, h) per sample = −H_lh / log(#image tokens): the answer position's attention entropy over the image
  tokens at layer l, head h (`vrprobe.metrics.sharpness`, nats), normalised and negated so that higher = sharper, as
  the study's `sharp`. For a layer (head `"mean"`): the same from the entropy averaged over the layer's heads.
- **r_correct**: Pearson r of sharp with correct (0/1: the point-biserial r); **r_overconfidence**: Pearson r of sharp
  with max(confidence − correct, 0). Two-sided p-values from the t distribution (`scipy.stats.pearsonr`).
- **family**: every layer × head and every layer mean, one family per target; q = Benjamini–Hochberg adjusted p
  (`vrprobe.metrics.stats.benjamini_hochberg`); a cell **predicts correctness** when q < alpha and r_correct > 0,
  **goes with errors** when q < alpha and r_correct < 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from vrprobe.metrics.stats import benjamini_hochberg


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def head_sharpness(records: Sequence[dict[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """Per (layer, head) and per layer: r_correct and r_overconfidence with p and BH q (see the module docstring),
    from records holding `entropy_by_head` [L][H], `n_image_tokens` (or `sharpness`/`sharpness_norm` to infer it),
    `confidence` and `correct`. Returns {cells, n_tests, predicts_correctness, goes_with_errors, best}."""
    recs = [r for r in records if r.get("entropy_by_head") is not None]
    if len(recs) < 3:
        return {"cells": [], "n_tests": 0, "predicts_correctness": [], "goes_with_errors": [], "best": None}
    entropy = np.array([np.asarray([list(h) for h in r["entropy_by_head"]], dtype=np.float64) for r in recs])
    n_image = np.array([_n_image(r) for r in recs], dtype=np.float64)
    sharp = -entropy / np.log(np.maximum(n_image, 2))[:, None, None]  # [N, L, H]
    correct = np.array([float(r["correct"]) for r in recs])
    over = np.clip(np.array([float(r["confidence"]) for r in recs]) - correct, 0, None)
    cells: list[dict[str, Any]] = []
    n_layers, n_heads = sharp.shape[1:]
    for layer in range(n_layers):
        columns: list[tuple[int | str, np.ndarray]] = [(h, sharp[:, layer, h]) for h in range(n_heads)]
        columns.append(("mean", -entropy[:, layer].mean(1) / np.log(np.maximum(n_image, 2))))
        for head, x in columns:
            rc, pc = _pearson(x, correct)
            ro, po = _pearson(x, over)
            cells.append(
                {"layer": layer, "head": head, "r_correct": rc, "p_correct": pc}
                | {"r_overconfidence": ro, "p_overconfidence": po}
            )
    for target in ("correct", "overconfidence"):
        q = benjamini_hochberg([c[f"p_{target}"] for c in cells])
        for c, v in zip(cells, q, strict=True):
            c[f"q_{target}"] = float(v)
    cells = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.items()} for c in cells]

    def hit(c: dict[str, Any], sign: int) -> bool:
        return c["q_correct"] is not None and c["q_correct"] < alpha and sign * c["r_correct"] > 0

    tested = [c for c in cells if c["q_correct"] is not None]
    best = min(tested, key=lambda c: (c["q_correct"], -abs(c["r_correct"]))) if tested else None
    return {
        "cells": cells,
        "n_tests": len(tested),
        "alpha": alpha,
        "predicts_correctness": [_name(c) for c in cells if hit(c, 1)],
        "goes_with_errors": [_name(c) for c in cells if hit(c, -1)],
        "best": best,
    }


def _n_image(r: dict[str, Any]) -> float:
    if r.get("n_image_tokens"):
        return float(r["n_image_tokens"])
    if r.get("sharpness_norm"):
        return math.exp(r["sharpness"] / r["sharpness_norm"])
    raise ValueError("a record needs n_image_tokens (or sharpness and sharpness_norm) for head sharpness")


def _name(c: dict[str, Any]) -> str:
    return f"layer {c['layer']}" if c["head"] == "mean" else f"layer {c['layer']} head {c['head']}"


def head_matrix(result: dict[str, Any], key: str = "r_correct") -> tuple[np.ndarray, np.ndarray]:
    """[L, H] of `key` over the heads (NaN where undefined) and the [L, H] mask of cells with q_correct < alpha."""
    heads = [c for c in result["cells"] if c["head"] != "mean"]
    if not heads:
        return np.zeros((0, 0)), np.zeros((0, 0), dtype=bool)
    n_layers = 1 + max(c["layer"] for c in heads)
    n_heads = 1 + max(c["head"] for c in heads)
    values = np.full((n_layers, n_heads), np.nan)
    significant = np.zeros((n_layers, n_heads), dtype=bool)
    for c in heads:
        values[c["layer"], c["head"]] = np.nan if c[key] is None else c[key]
        significant[c["layer"], c["head"]] = c["q_correct"] is not None and c["q_correct"] < result["alpha"]
    return values, significant
