"""Grounding: does the answer position's attention fall on the target region?

Definitions. The image tokens i = 1..N each cover a rectangle of the original image, their *cell*
c_i = (x0, y0, x1, y1) in original-image pixels (image-token order). The *target* T is the union of the sample's boxes
(x, y, w, h) (x, y the top-left corner), in the same pixels. Then

    w_i = |c_i ∩ T| / |c_i|                 the target weight of cell i, in [0, 1] (0 for a zero-area cell)
    target_area = (1/N) Σ_i w_i              fraction of the image the target covers *as the token cells see it*:
                                             the on-target mass of uniform attention over the image tokens
    attention_on_target = Σ_i p_i w_i        attention mass on the target, p the attention over the image tokens
                                             renormalised to sum 1; in [0, 1]
    attention_lift = on_target / target_area (ratio; 1 = no better than uniform, NaN when target_area = 0)
    pointing_hit = [w_argmax p > 0]          1.0 when the most-attended cell overlaps the target, else 0.0

Everything is exact (no rasterisation) and computed in float64; attention functions take any leading dims (layers,
heads) before the last, image-token axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vrprobe.errors import VrprobeError


def _boxes(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    if not np.isfinite(b).all():
        raise VrprobeError(f"a target box is not finite: {b[~np.isfinite(b).all(1)][0].tolist()}")
    if (b[:, 2:] < 0).any():
        raise VrprobeError(f"a target box has negative width or height: {b[(b[:, 2:] < 0).any(1)][0].tolist()}")
    return b


def target_weights(cells: np.ndarray, boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """w_i = |c_i ∩ ∪_k B_k| / |c_i|: the fraction of each cell's area inside the union of the boxes, float64 [N].

    `cells` [N, 4]: (x0, y0, x1, y1) per image token, original-image pixels. `boxes`: (x, y, w, h) per box, the
    same pixels; overlapping boxes count once (the union). Exact: the union is split into disjoint rectangles by
    coordinate compression (the grid of all box edges; an elementary rectangle is in the union when its centre is in
    some box) and each cell's overlap with every such rectangle is the product of its x and y interval overlaps.
    Edge cases: no boxes, or boxes of zero width or height → all 0; a zero-area cell → 0; parts of boxes outside
    every cell simply count nowhere. A non-finite box or a negative width/height raises `VrprobeError`.
    """
    c = np.asarray(cells, dtype=np.float64).reshape(-1, 4)
    b = _boxes(boxes)
    b = b[(b[:, 2] > 0) & (b[:, 3] > 0)]
    if len(b) == 0 or len(c) == 0:
        return np.zeros(len(c))
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    xs, ys = np.unique(np.concatenate([x0, x1])), np.unique(np.concatenate([y0, y1]))
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2  # elementary rectangles' centres [X], [Y]
    inside_x = (x0[:, None] < cx[None, :]) & (cx[None, :] < x1[:, None])  # [K, X]
    inside_y = (y0[:, None] < cy[None, :]) & (cy[None, :] < y1[:, None])  # [K, Y]
    covered = (inside_x[:, :, None] & inside_y[:, None, :]).any(0).astype(np.float64)  # [X, Y]
    ox = np.clip(np.minimum(c[:, 2:3], xs[None, 1:]) - np.maximum(c[:, 0:1], xs[None, :-1]), 0, None)  # [N, X]
    oy = np.clip(np.minimum(c[:, 3:4], ys[None, 1:]) - np.maximum(c[:, 1:2], ys[None, :-1]), 0, None)  # [N, Y]
    inter = np.einsum("nx,xy,ny->n", ox, covered, oy)
    area = np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None)
    w = np.divide(inter, area, out=np.zeros(len(c)), where=area > 0)
    return np.clip(w, 0.0, 1.0)  # rounding only: the intersection never exceeds the cell


def renormalise(attention: np.ndarray) -> np.ndarray:
    """p_i = a_i / Σ_j a_j over the last (image-token) axis, float64; a row with no mass is taken as uniform (1/N),
    as sharpness takes it."""
    a = np.asarray(attention, dtype=np.float64)
    total = a.sum(-1, keepdims=True)
    uniform = np.full_like(a, 1.0 / a.shape[-1]) if a.shape[-1] else a
    return np.where(total > 0, a / np.where(total > 0, total, 1.0), uniform)


def target_area(weights: np.ndarray) -> float:
    """(1/N) Σ_i w_i: the fraction of the image the target covers as the token cells see it (the on-target mass of
    uniform attention over the image tokens; a fraction in [0, 1]). NaN for no cells."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.mean()) if w.size else float("nan")


def attention_on_target(p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_i p_i w_i over the last axis: the attention mass on the target (a fraction in [0, 1]), each cell counted by
    the fraction of it inside the boxes. `p` [..., N] is attention over the image tokens, renormalised here to sum 1
    (see `renormalise`); returns float64 [...]."""
    return renormalise(p) @ np.asarray(weights, dtype=np.float64)


def attention_lift(p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """attention_on_target / target_area (a ratio ≥ 0; 1 = no better than uniform attention, N/#on-target cells at
    most for whole cells); NaN where target_area is 0 (the target covers no cell). Float64 [...]."""
    area = target_area(weights)
    on = attention_on_target(p, weights)
    return on / area if area > 0 else np.full_like(on, np.nan)


def pointing_hit(p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1.0 where the most-attended cell (the first argmax of `p` over the last axis) has w > 0, i.e. overlaps the
    target with positive area, else 0.0. Float64 [...]."""
    top = np.argmax(np.asarray(p, dtype=np.float64), axis=-1)
    return (np.asarray(weights, dtype=np.float64)[top] > 0).astype(np.float64)
