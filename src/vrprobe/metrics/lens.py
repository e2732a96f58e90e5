"""Logit lens: when the answer settles across layers, and by how much it wins at the end.

The logit lens reads each decoder layer's output at the answer (last prompt) position through the model's final norm
and unembedding, giving scores[l, k] for every layer l = 0 … L−1 and answer k (a candidate's first token, or every
token of the vocabulary). These functions take those scores, or their per-layer top-1 indices; nothing here runs a
model.

- `lock_layer(top1, final)`: the first layer from which `final` is the top-1 answer at that layer and at every later
  one (0-based); L (one past the last layer) when the last layer's top-1 is not `final` (it never locks).
- `lock_depth(lock, n_layers)`: lock / L ∈ [0, 1]; 1 = never locks.
- `margin(scores)`: top-1 minus top-2 score along the last axis (logits → a difference of logits, which equals the
  difference of log-probabilities under the softmax over the same answers); NaN for fewer than two answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def lock_layer(top1: Sequence[int] | np.ndarray, final: int) -> int:
    """First layer l (0-based) with top1[m] == final for every m ≥ l.

    `top1` [L]: the index of the top-scoring answer at each layer; `final`: the answer that counts (the model's own).
    Edge cases: `final` top-1 at every layer → 0; only at the last layer → L − 1; not top-1 at the last layer → L
    (never locks: one past the last layer, so "never" ranks as later than any lock); L = 0 → 0 (= L)."""
    values = np.asarray(top1).reshape(-1)
    lock = len(values)
    for layer in range(len(values) - 1, -1, -1):
        if values[layer] != final:
            break
        lock = layer
    return lock


def lock_depth(lock: int, n_layers: int) -> float:
    """lock / L: the fraction of the decoder's layers before the answer locks, in [0, 1] (0 = locked from the first
    layer, (L − 1)/L = only at the last, 1 = never); NaN for L = 0."""
    return lock / n_layers if n_layers > 0 else float("nan")


def margin(scores: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """Top-1 minus top-2 of `scores` [..., K] along the last axis, in the scores' units (≥ 0; 0 on a tie), computed in
    float64; a float for a 1-D input, else an array [...]. NaN where K < 2 (no runner-up)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.shape[-1] < 2:
        out = np.full(values.shape[:-1], np.nan)
    else:
        top = np.partition(values, -2, axis=-1)[..., -2:]
        out = top[..., 1] - top[..., 0]
    return float(out) if out.ndim == 0 else out
