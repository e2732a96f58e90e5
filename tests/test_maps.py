"""Map shape (`vrprobe.metrics.maps`): spatial entropy, DBSCAN cluster count and the per-layer entropy sequence on
hand-computed maps, and the map signals (`vrprobe.analyses.signals.maps`) on zoo:llava's clean records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from tests.numerics import assert_close

from vrprobe.analyses.signals.base import SignalOptions
from vrprobe.analyses.signals.maps import COLUMNS, SIGNALS, compute
from vrprobe.data import load_dataset
from vrprobe.errors import VrprobeError
from vrprobe.metrics.maps import (
    cluster_count,
    entropy_by_layer,
    entropy_changes,
    entropy_rebound,
    lock_layer,
    normalised_spatial_entropy,
    spatial_entropy,
)
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch


def test_spatial_entropy_by_hand() -> None:
    """Uniform = log n (whatever its scale, and the all-zero map too), one-hot = 0, a 2-value map by hand."""
    for scale in (1.0, 5.0, 1e-3):
        assert_close(spatial_entropy(np.full(12, scale), (3, 4)), math.log(12), dtype=np.float64, scale=math.log(12))
    assert_close(spatial_entropy(np.zeros(12), (3, 4)), math.log(12), dtype=np.float64, scale=math.log(12))
    one_hot = np.zeros(12)
    one_hot[7] = 0.3
    assert spatial_entropy(one_hot, (3, 4)) == 0.0  # exact: q = (0, …, 1, …, 0), 1 · log 1 = 0 and 0 · log 0 = 0
    # q = (1/3, 1/3, 1/6, 1/6): H = 2/3 log 3 + 1/3 log 6
    h = 2 / 3 * math.log(3) + 1 / 3 * math.log(6)
    assert_close(spatial_entropy([2.0, 2.0, 1.0, 1.0], (2, 2)), h, dtype=np.float64, scale=h)
    assert_close(spatial_entropy([-1.0, 1.0], (1, 2)), math.log(2), dtype=np.float64, scale=1.0)  # L1: |p|
    assert spatial_entropy([4.0], (1, 1)) == 0.0  # exact: one cell
    assert normalised_spatial_entropy([4.0], (1, 1)) == 0.0
    assert_close(normalised_spatial_entropy(np.ones(24), (4, 6)), 1.0, dtype=np.float64, scale=1.0)
    assert_close(normalised_spatial_entropy([2.0, 2.0, 1.0, 1.0], (2, 2)), h / math.log(4), dtype=np.float64)


def test_spatial_entropy_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for rows, cols in ((2, 3), (24, 24), (4, 6)):
        p = rng.dirichlet(np.full(rows * cols, 0.3))
        p[rng.random(rows * cols) < 0.2] = 0.0  # some exact zeros
        expected = float(scipy.stats.entropy(p))  # natural log, normalises p itself
        assert_close(spatial_entropy(p, (rows, cols)), expected, dtype=np.float64, scale=math.log(rows * cols))


def test_bad_maps_raise() -> None:
    with pytest.raises(VrprobeError, match="has 20 cells"):
        spatial_entropy(np.ones(24), (4, 5))
    with pytest.raises(VrprobeError, match="non-finite"):
        spatial_entropy([1.0, math.nan], (1, 2))
    with pytest.raises(VrprobeError, match="percentile"):
        cluster_count(np.ones(4), (2, 2), percentile=101.0)
    with pytest.raises(VrprobeError, match="eps"):
        cluster_count(np.ones(4), (2, 2), eps=0.0)
    with pytest.raises(VrprobeError, match="min_samples"):
        cluster_count(np.ones(4), (2, 2), min_samples=0)
    with pytest.raises(VrprobeError, match="layers, cells"):
        entropy_by_layer(np.ones(4), (2, 2))
    with pytest.raises(VrprobeError, match="non-empty"):
        lock_layer([])


def _blobs(grid: tuple[int, int], cells: list[tuple[int, int]], background: np.ndarray | None = None) -> np.ndarray:
    m = np.zeros(grid) if background is None else background.reshape(grid).copy()
    for r, c in cells:
        m[r, c] = 10.0
    return m.reshape(-1)  # row-major


def test_cluster_count_by_hand() -> None:
    """Two separated 2x2 blobs = 2; a blob below min_samples = noise = 0; a flat map selects every cell."""
    # 8 hot cells of 36: the 90th percentile (index 31.5 of the sorted 36) is 10, so exactly the blobs are high
    two = _blobs((6, 6), [(0, 0), (0, 1), (1, 0), (1, 1), (4, 4), (4, 5), (5, 4), (5, 5)])
    assert cluster_count(two, (6, 6)) == 2
    # joined diagonally (distance √2 ≤ eps 1.5): one cluster
    assert cluster_count(_blobs((6, 6), [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)]), (6, 6)) == 1
    # two hot cells over a distinct background: the 90th percentile of 16 lies halfway between the 14th value (0.15)
    # and 10, so only the two hot cells are high; 2 < min_samples = 3 → both noise
    small = _blobs((4, 4), [(1, 1), (1, 2)], background=np.arange(16) / 100)
    assert cluster_count(small, (4, 4)) == 0
    assert cluster_count(small, (4, 4), min_samples=2) == 1
    # ties: a flat map's percentile is its value, every cell is high
    assert cluster_count(np.full(9, 0.5), (3, 3)) == 1
    assert cluster_count(np.full(2, 0.5), (1, 2)) == 0  # 2 cells < min_samples: noise
    # a one-hot map's 90th percentile is 0: every cell ties at or above it
    one_hot = np.zeros(36)
    one_hot[14] = 1.0
    assert cluster_count(one_hot, (6, 6)) == 1
    assert cluster_count(one_hot, (6, 6), percentile=100.0) == 0  # only the peak: 1 cell < min_samples
    assert cluster_count(one_hot, (6, 6), percentile=100.0, min_samples=1) == 1


def test_cluster_count_reads_the_grid_row_major() -> None:
    """On a 4x6 grid cells 4, 5 are (0, 4), (0, 5) and cells 6, 7 are (1, 0), (1, 1): two pairs far apart. Read as 6
    columns of 4 (or column-major) the same four cells would form one line."""
    p = np.zeros(24)
    p[[4, 5, 6, 7]] = 1.0  # 90th percentile: index 20.7 of the sorted 24 = 1
    assert cluster_count(p, (4, 6), min_samples=2) == 2
    assert cluster_count(p, (6, 4), min_samples=2) == 1  # the other grid: row 1, columns 0-3


def test_entropy_sequence_by_hand() -> None:
    """entropy_by_layer is spatial_entropy per row; ΔH_s, the lock layer and the rebound of a known sequence."""
    maps = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0], [2.0, 2.0, 1.0, 1.0]])
    h = entropy_by_layer(maps, (2, 2))
    assert h.shape == (3,) and h[1] == 0.0
    assert_close(h, [spatial_entropy(m, (2, 2)) for m in maps], dtype=np.float64, scale=math.log(4))
    seq = [3.0, 1.0, 0.5, 2.0]  # binary fractions: the differences are exact
    assert entropy_changes(seq).tolist() == [-2.0, -0.5, 1.5]
    assert lock_layer(seq) == 2 and entropy_rebound(seq) == 1.5
    assert lock_layer([1.0, 0.5, 0.5, 0.75]) == 1  # first on ties
    assert lock_layer([2.0, 2.0]) == 0 and entropy_rebound([2.0, 2.0]) == 0.0  # constant: locks at once
    assert entropy_changes([1.0]).shape == (0,) and lock_layer([1.0]) == 0 and entropy_rebound([1.0]) == 0.0
    assert entropy_rebound([3.0, 2.0, 1.0]) == 0.0  # the last layer is the sharpest


def test_signals_declare_what_they_cost() -> None:
    assert COLUMNS == ("spatial_entropy", "cluster_count", "hs_lock_depth", "hs_rebound")
    for s in SIGNALS:
        assert (s.forwards, s.backwards, s.granularity, s.causal, s.needs_labels) == (0, 0, "token", False, False)
    assert [s.higher_is_reliable for s in SIGNALS] == [False, False, True, False]


def test_map_signals_on_zoo_llava() -> None:
    """compute() on zoo:llava's clean records equals the metrics applied by hand to the records' maps; the
    per-layer maps sum to 1 and average to attention_image; a record without a map gives NaN."""
    adapter = load_adapter("zoo:llava")
    samples = load_dataset("easy-vqa:test", limit=8).samples
    records = score_batch(adapter, samples, hidden=True)
    options = SignalOptions(percentile=80.0, eps=1.5, min_samples=2)
    values = compute(adapter, samples, records, options)
    assert len(values) == len(samples)
    for r, v in zip(records, values, strict=True):
        grid, mean, by_layer = r["image_grid"], r["attention_image"], np.asarray(r["attention_image_by_layer"])
        assert by_layer.shape == (adapter.num_layers, grid[0] * grid[1])
        assert_close(by_layer.sum(1), np.ones(len(by_layer)), dtype=np.float64, scale=1.0, ulps=by_layer.shape[1])
        assert_close(by_layer.mean(0), mean, dtype=np.float32, scale=1.0)
        # exact: the same functions on the same values
        assert v["spatial_entropy"] == spatial_entropy(mean, grid)
        assert v["cluster_count"] == cluster_count(mean, grid, percentile=80.0, eps=1.5, min_samples=2)
        h = [spatial_entropy(m, grid) for m in by_layer]
        assert_close(entropy_by_layer(by_layer, grid), h, dtype=np.float64, scale=math.log(len(mean)))
        assert v["hs_lock_depth"] == int(np.argmin(entropy_by_layer(by_layer, grid))) / (len(h) - 1)
        assert_close(v["hs_rebound"], h[-1] - min(h), dtype=np.float64, scale=math.log(len(mean)))
        assert 0.0 <= v["spatial_entropy"] <= math.log(len(mean)) and v["cluster_count"] >= 0
    bare = compute(adapter, samples[:1], [{"image_size": [64, 64]}], options)[0]
    assert set(bare) == set(COLUMNS) and all(math.isnan(x) for x in bare.values())
    with pytest.raises(VrprobeError, match="1 samples but 2 records"):
        compute(adapter, samples[:1], records[:2], options)
