"""Map shape: how spread out and how fragmented a map over the image-token grid is, and how its spread evolves over
the layers (the VRP paper's structural-attention metrics H_s, C_k and ΔH_s).

Definitions. A map p has one value per cell of a `grid` = (rows, cols) of image tokens, in row-major order (cell
i = r · cols + c lies at row r, column c). Its L1 normalisation is q_i = |p_i| / Σ_j |p_j| (for an attention map,
p ≥ 0, simply p / Σ p).

    H_s = −Σ_i q_i log q_i               spatial entropy, nats; 0 · log 0 = 0; in [0, log n], n = rows · cols
    C_k = #DBSCAN clusters of {(r, c) : p_rc ≥ percentile_P(p)}
                                         cluster count of the high cells (Euclidean on grid coordinates)
    ΔH_s[l] = H_s[l + 1] − H_s[l]        the change of the per-layer entropy from layer l to l + 1 (nats)
    lock_layer = argmin_l H_s[l]         "early locking": the layer where the map is sharpest (first one on ties)
    entropy_rebound = H_s[L − 1] − min_l H_s[l]
                                         how far the map diffuses again after it locked (nats, ≥ 0)

The paper (VRP: "Visuals Lie, Consistency Speaks", arXiv 2606.17389) reports models that "Early Lock" (the entropy
falls in early layers) "only to diffuse attention later"; lock_layer and entropy_rebound are the two halves of that
reading, one number each, from the per-layer sequence alone. Everything is computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import DBSCAN

from vrprobe.errors import VrprobeError


def _cells(grid: Sequence[int]) -> int:
    rows, cols = (int(v) for v in grid)
    if rows < 1 or cols < 1:
        raise VrprobeError(f"a map grid needs at least one row and one column, got {list(grid)}")
    return rows * cols


def _maps(p: Sequence[float] | Sequence[Sequence[float]] | np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """`p` as float64 with its last axis checked against the grid's cell count and every value finite."""
    x = np.asarray(p, dtype=np.float64)
    n = _cells(grid)
    if x.ndim == 0 or x.shape[-1] != n:
        raise VrprobeError(f"a map over a {list(grid)} grid has {n} cells, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise VrprobeError("a map has a non-finite value")
    return x


def _entropy(x: np.ndarray) -> np.ndarray:
    """H_s along the last axis of checked maps `x` [..., n] (see the module docstring); all-zero rows → log n."""
    a = np.abs(x)
    total = a.sum(-1, keepdims=True)
    q = np.where(total > 0, a / np.where(total > 0, total, 1.0), 1.0 / x.shape[-1])
    plogp = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return np.asarray(-plogp.sum(-1))


def spatial_entropy(p: Sequence[float] | np.ndarray, grid: Sequence[int]) -> float:
    """H_s = −Σ_i q_i log q_i, q_i = |p_i| / Σ_j |p_j|: the Shannon entropy (nats) of the L1-normalised map `p` over
    the `grid` = (rows, cols) cells (p: n = rows · cols values, row-major).

    Range [0, log n]: 0 when one cell holds all the mass, log n for a uniform map. Edge cases: 0 · log 0 = 0; an
    all-zero map counts as uniform (H_s = log n, as sharpness takes a row with no image mass); a 1-cell grid gives 0.
    A map whose length is not n, or with a non-finite value, raises `VrprobeError`.
    """
    return float(_entropy(_maps(p, grid)))


def normalised_spatial_entropy(p: Sequence[float] | np.ndarray, grid: Sequence[int]) -> float:
    """H_s / log n ∈ [0, 1], n = rows · cols: spatial entropy comparable across grids of different sizes; 0 for a
    1-cell grid (where H_s = 0 too). Same inputs and edge cases as `spatial_entropy`."""
    n = _cells(grid)
    h = spatial_entropy(p, grid)
    return h / float(np.log(n)) if n > 1 else 0.0


def cluster_count(
    p: Sequence[float] | np.ndarray,
    grid: Sequence[int],
    percentile: float = 90.0,
    eps: float = 1.5,
    min_samples: int = 3,
) -> int:
    """C_k: the number of DBSCAN clusters among the map's high cells.

    High cells: those with p_i ≥ t, t = `np.percentile(p, percentile)` (numpy's default linear interpolation) of the
    map's raw values (for a non-negative map the same cells as of its L1 normalisation). Each high cell i sits at
    (row, col) = divmod(i, cols) (row-major); `sklearn.cluster.DBSCAN(eps, min_samples)` with the Euclidean metric
    groups them: a core cell has ≥ `min_samples` high cells (itself included) within distance ≤ `eps` grid cells
    (eps 1.5 = the 8 neighbours), a cluster is the core cells connected through such neighbourhoods plus the
    non-core cells within eps of one. Noise (label −1) is not a cluster. Ties: every cell equal to t is high, so a
    flat map selects all n cells (one cluster when n ≥ min_samples and the grid is connected at eps ≥ 1). At least
    one cell is always high (the maximum). A group of fewer than `min_samples` high cells alone is noise: 0 clusters.

    Raises `VrprobeError` for a percentile outside [0, 100], eps ≤ 0, min_samples < 1, or a bad map (`spatial_entropy`).
    """
    x = _maps(p, grid)
    if x.ndim != 1:
        raise VrprobeError(f"cluster_count takes one map, got shape {list(x.shape)}")
    if not 0.0 <= percentile <= 100.0:
        raise VrprobeError(f"percentile must be in [0, 100], got {percentile}")
    if not eps > 0:
        raise VrprobeError(f"DBSCAN eps must be > 0, got {eps}")
    if min_samples < 1:
        raise VrprobeError(f"DBSCAN min_samples must be ≥ 1, got {min_samples}")
    cols = int(grid[1])
    high = np.flatnonzero(x >= np.percentile(x, percentile))
    coords = np.stack(np.divmod(high, cols), axis=1).astype(np.float64)  # [k, (row, col)]
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="euclidean").fit(coords).labels_
    return len(set(labels.tolist()) - {-1})


def entropy_by_layer(maps: Sequence[Sequence[float]] | np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """H_s of each layer's map: `maps` [L, n] (one row-major map over the `grid` per layer) → float64 [L] (nats),
    row l = `spatial_entropy(maps[l], grid)`. Raises `VrprobeError` unless `maps` is 2-D with n = rows · cols."""
    x = _maps(maps, grid)
    if x.ndim != 2:
        raise VrprobeError(f"entropy_by_layer takes maps [layers, cells], got shape {list(x.shape)}")
    return _entropy(x)


def _sequence(h: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(h, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise VrprobeError(f"a per-layer entropy sequence is 1-D and non-empty, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise VrprobeError("a per-layer entropy sequence has a non-finite value")
    return x


def entropy_changes(h: Sequence[float] | np.ndarray) -> np.ndarray:
    """ΔH_s[l] = h[l + 1] − h[l], l = 0..L−2: float64 [L − 1] (nats; negative = the map sharpens from layer l to
    l + 1). One layer gives an empty array; an empty or non-finite `h` raises `VrprobeError`."""
    return np.diff(_sequence(h))


def lock_layer(h: Sequence[float] | np.ndarray) -> int:
    """Early locking: lock_layer = argmin_l h[l], the (0-based) layer whose map is sharpest; the first such layer on
    ties (a constant sequence locks at layer 0). An empty or non-finite `h` raises `VrprobeError`."""
    return int(np.argmin(_sequence(h)))


def entropy_rebound(h: Sequence[float] | np.ndarray) -> float:
    """h[L − 1] − min_l h[l] ≥ 0 (nats): how much the map diffuses again between the lock layer and the last layer;
    0 when the last layer is (one of) the sharpest. An empty or non-finite `h` raises `VrprobeError`."""
    x = _sequence(h)
    return float(x[-1] - x.min())
