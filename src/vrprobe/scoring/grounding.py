"""Grounding per sample, read from the answer forward's recorded attention: where on the original image the answer
position looks (`attention_image` on the token grid) and, for samples with target boxes, how much of that attention
falls on the target (the metrics of `vrprobe.metrics.grounding`: overall, per layer and per layer and head).

Attention here is the answer (last) position's attention over the image tokens, renormalised over them per layer and
head (p_{l,h,i} = a_{l,h,i} / Σ_{j∈image} a_{l,h,j}; a row with no image mass counts as uniform, as sharpness takes
it). The overall values use its mean over heads and layers, `_by_layer` its mean over heads, `_by_head` each head.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vrprobe.data import Sample
from vrprobe.errors import VrprobeError
from vrprobe.metrics.grounding import (
    attention_lift,
    attention_on_target,
    pointing_hit,
    renormalise,
    target_area,
    target_weights,
)
from vrprobe.models import Adapter, Batch
from vrprobe.models.geometry import ImageGeometry

DEFINITIONS = {
    "image_size": "the original image's [width, height] in pixels",
    "image_grid": "[rows, cols] of the image-token grid laid over the original image (models with one image grid)",
    "image_cells": "each image token's rectangle [x0, y0, x1, y1] in original-image pixels, kept only when the grid "
    "does not evenly tile the whole image (a centre crop, padding): where attention_image's cells lie",
    "attention_image": "the answer position's attention over the image tokens, renormalised over them per layer and "
    "head, averaged over heads and layers; in image-token order = row-major grid order (one-grid models); sums to 1",
    "attention_image_by_layer": "the same per layer ([layer][cell]): each layer's renormalised attention averaged "
    "over its heads; each row sums to 1 and the rows' mean is attention_image (one-grid models)",
    "boxes": "the sample's target boxes [x, y, w, h] in original-image pixels (grounded keys exist only with boxes)",
    "target_area": "mean over image tokens of the fraction of each token's cell inside the union of the boxes: the "
    "fraction of the image the target covers as the token cells see it (= on target of uniform attention), in [0, 1]",
    "attention_on_target": "Σ_i p_i w_i: attention mass on the target, p = attention_image, w_i = fraction of cell i "
    "inside the boxes; in [0, 1]",
    "attention_lift": "attention_on_target / target_area (ratio; 1 = no better than uniform; NaN when the target "
    "covers no token cell)",
    "pointing_hit": "1 if the most-attended image token's cell (first argmax of attention_image) overlaps a box, "
    "else 0",
    "attention_on_target_by_layer / attention_lift_by_layer / pointing_hit_by_layer": "the same from each layer's "
    "attention averaged over its heads (lists over layers; on target and lift average to the overall values)",
    "attention_on_target_by_head": "attention on target of each layer's each head ([layer][head])",
}


def image_attention(attention: torch.Tensor, image_mask: torch.Tensor, row: int) -> np.ndarray:
    """Row `row`'s answer-position attention over its image tokens, renormalised per layer and head: float64
    [L, H, N] in image-token (sequence) order, from `attention` [L, B, H, S] and `image_mask` [B, S]."""
    mask = image_mask[row].to(attention.device)
    return renormalise(attention[:, row][:, :, mask].detach().to("cpu", torch.float64).numpy())


def tiles_whole_image(cells: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether `cells` [N, 4] are the even row-major `grid` over the whole `size` = (W, H) image (what a plain resize
    gives), to within 1e-6 px: then the grid alone says where each cell lies and the record need not keep them."""
    rows, cols = grid
    w, h = size
    xs, ys = np.linspace(0, w, cols + 1), np.linspace(0, h, rows + 1)
    even = np.stack(np.broadcast_arrays(xs[None, :-1], ys[:-1, None], xs[None, 1:], ys[1:, None]), axis=-1).reshape(
        -1, 4
    )
    return bool(cells.shape == even.shape and np.abs(cells - even).max(initial=0.0) <= 1e-6)


def grounding_record(sample: Sample, geometry: ImageGeometry, p: np.ndarray) -> dict[str, Any]:
    """The grounding keys of one sample (see `DEFINITIONS`) from `p` [L, H, N], its renormalised image attention,
    and `geometry`, the token → region map of its encoded item (N cells, image-token order)."""
    cells = np.asarray(geometry.cells, dtype=np.float64)
    if len(cells) != p.shape[-1]:
        raise VrprobeError(
            f"{p.shape[-1]} image tokens but the image geometry maps {len(cells)} (a token → region map that does "
            "not follow the processor)"
        )
    mean = p.mean((0, 1))
    out: dict[str, Any] = {"image_size": [int(v) for v in geometry.image_size]}
    if geometry.grid is not None:
        out["image_grid"] = [int(v) for v in geometry.grid]
        out["attention_image"] = mean.tolist()
        out["attention_image_by_layer"] = p.mean(1).tolist()
        if not tiles_whole_image(cells, geometry.grid, geometry.image_size):
            out["image_cells"] = cells.tolist()
    if sample.boxes:
        w = target_weights(cells, sample.boxes)
        by_layer = p.mean(1)  # [L, N]
        out |= {
            "boxes": [[float(v) for v in b] for b in sample.boxes],
            "target_area": target_area(w),
            "attention_on_target": float(attention_on_target(mean, w)),
            "attention_lift": float(attention_lift(mean, w)),
            "pointing_hit": float(pointing_hit(mean, w)),
            "attention_on_target_by_layer": attention_on_target(by_layer, w).tolist(),
            "attention_lift_by_layer": attention_lift(by_layer, w).tolist(),
            "pointing_hit_by_layer": pointing_hit(by_layer, w).tolist(),
            "attention_on_target_by_head": attention_on_target(p, w).tolist(),
        }
    return out


def grounding_records(
    adapter: Adapter, samples: Sequence[Sample], batch: Batch, attention: torch.Tensor
) -> list[dict[str, Any]]:
    """Each sample's grounding keys from the answer forward's recorded attention `attention` [L, B, H, S] (every
    layer's answer-position row) over `batch`, whose `groups.image` marks the image tokens.

    A model type whose token → region map vrprobe does not know (`adapter.image_geometry` raises `VrprobeError`)
    gets records with `image_size` only and a warning: its answers and sharpness are still scored.
    """
    out = []
    # a processor maps every image of one size the same way: the geometry is computed once per size in the batch
    known: dict[tuple[int, int] | None, ImageGeometry] = {}
    for i, (s, item) in enumerate(zip(samples, batch.items, strict=True)):
        try:
            if item.image_size not in known:
                known[item.image_size] = adapter.image_geometry(item)
            geometry = known[item.image_size]
        except VrprobeError as exc:
            warnings.warn(
                f"{adapter.name}: no image regions, so no attention_image or grounded metrics: {exc}", stacklevel=3
            )
            out.append({} if item.image_size is None else {"image_size": [int(v) for v in item.image_size]})
            continue
        try:
            out.append(grounding_record(s, geometry, image_attention(attention, batch.groups.image, i)))
        except VrprobeError as exc:
            raise VrprobeError(f"{adapter.name}: sample {s.id}: {exc}") from None
    return out
