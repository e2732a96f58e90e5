"""Grounded metrics: target weights, target area, attention on target, lift and pointing hit, by hand-worked cases,
against a plain pixel rasterisation, and in the records of the zoo models' answer forward."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.numerics import FORWARD, assert_close

from vrprobe.data import Sample, load_dataset
from vrprobe.errors import VrprobeError
from vrprobe.interventions import Site, intervene
from vrprobe.metrics.grounding import (
    attention_lift,
    attention_on_target,
    pointing_hit,
    renormalise,
    target_area,
    target_weights,
)
from vrprobe.models.geometry import ImageGeometry
from vrprobe.scoring.evaluate import score_batch
from vrprobe.scoring.grounding import grounding_record

# a 2x2 grid of 10x10 cells in row-major order: top-left, top-right, bottom-left, bottom-right
GRID = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]], dtype=float)


def test_hand_computed_case():
    # box [0, 15] x [0, 5]: half of the top-left cell (50/100), a quarter of the top-right one (25/100)
    w = target_weights(GRID, [(0, 0, 15, 5)])
    assert_close(w, [0.5, 0.25, 0.0, 0.0], dtype=np.float64, scale=1.0)
    assert target_area(w) == pytest.approx(75 / 400, abs=1e-15)  # the box's 75 px² of the grid's 400
    far = np.array([1.0, 2.0, 3.0, 4.0])  # renormalised: 0.1, 0.2, 0.3, 0.4; peak on the bottom-right cell
    assert float(attention_on_target(far, w)) == pytest.approx(0.1 * 0.5 + 0.2 * 0.25, abs=1e-15)  # 0.1
    assert float(attention_lift(far, w)) == pytest.approx(0.1 / 0.1875, abs=1e-14)  # 0.533…: worse than uniform
    assert float(pointing_hit(far, w)) == 0.0  # exact: an indicator
    near = np.array([0.4, 0.3, 0.2, 0.1])
    assert float(attention_on_target(near, w)) == pytest.approx(0.4 * 0.5 + 0.3 * 0.25, abs=1e-15)  # 0.275
    assert float(attention_lift(near, w)) == pytest.approx(0.275 / 0.1875, abs=1e-14)  # 1.466…
    assert float(pointing_hit(near, w)) == 1.0  # exact: an indicator
    uniform = np.full(4, 0.25)
    assert float(attention_lift(uniform, w)) == pytest.approx(1.0, abs=1e-14)  # lift 1 = uniform, by definition


def test_leading_dims_are_layers_and_heads():
    w = target_weights(GRID, [(0, 0, 15, 5)])
    p = np.array(
        [[[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]]
    )  # [2, 2, 4]
    on = attention_on_target(p, w)
    assert on.shape == (2, 2) and on.dtype == np.float64
    assert_close(on, [[0.1, 0.275], [0.1875, 0.25]], dtype=np.float64, scale=1.0)  # no mass → uniform → target_area
    assert pointing_hit(p, w).tolist() == [[0.0, 1.0], [1.0, 1.0]]  # exact: indicators (all-zero row: first cell)
    assert_close(attention_lift(p, w), on / 0.1875, dtype=np.float64, scale=2.0)
    assert_close(renormalise(p).sum(-1), np.ones((2, 2)), dtype=np.float64, scale=1.0)


def test_overlapping_boxes_count_once():
    # [0,10]² and [5,15]²: union 175 px²; the overlap [5,10]² (25 px²) counted once
    w = target_weights(GRID, [(0, 0, 10, 10), (5, 5, 10, 10)])
    assert_close(w, [1.0, 0.25, 0.25, 0.25], dtype=np.float64, scale=1.0)
    assert target_area(w) == pytest.approx(175 / 400, abs=1e-15)
    # a repeated box and a box inside another change nothing
    again = target_weights(GRID, [(0, 0, 10, 10), (5, 5, 10, 10), (5, 5, 10, 10), (6, 6, 2, 2)])
    assert_close(again, w, dtype=np.float64, scale=1.0)


def test_box_partly_outside_zero_area_cell_and_no_box():
    cells = np.vstack([GRID, [[5, 5, 5, 8]]])  # a zero-width cell
    w = target_weights(cells, [(-5, -5, 10, 10), (15, 15, 100, 100)])  # each overlaps the grid by 5x5 px only
    assert_close(w, [0.25, 0.0, 0.0, 0.25, 0.0], dtype=np.float64, scale=1.0)
    assert target_weights(GRID, []).tolist() == [0.0] * 4  # exact: nothing to cover
    assert target_weights(GRID, [(3, 3, 0, 5)]).tolist() == [0.0] * 4  # exact: a zero-width box covers nothing
    none = target_weights(GRID, [(100, 100, 5, 5)])  # outside every cell
    assert target_area(none) == 0.0  # exact: a sum of zeros
    assert math.isnan(float(attention_lift(np.ones(4), none)))
    with pytest.raises(VrprobeError, match="negative width or height"):
        target_weights(GRID, [(0, 0, -1, 5)])
    with pytest.raises(VrprobeError, match="not finite"):
        target_weights(GRID, [(0, float("nan"), 1, 5)])


def _raster_weights(cells: np.ndarray, boxes: np.ndarray, size: tuple[int, int], r: float) -> np.ndarray:
    """The fraction of each cell's pixel centres (a raster of pitch r over the image) inside a box, by plain loops."""
    xs = (np.arange(int(round(size[0] / r))) + 0.5) * r
    ys = (np.arange(int(round(size[1] / r))) + 0.5) * r
    union = np.zeros((len(ys), len(xs)), dtype=bool)
    for x, y, w, h in boxes:
        union |= ((ys >= y) & (ys < y + h))[:, None] & ((xs >= x) & (xs < x + w))[None, :]
    out = []
    for x0, y0, x1, y1 in cells:
        rows, cols = (ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1)
        n = rows.sum() * cols.sum()
        out.append(union[np.ix_(rows, cols)].sum() / n if n else 0.0)
    return np.array(out)


def _random_layout(rng: np.random.Generator, size: tuple[int, int], step: float) -> tuple[np.ndarray, np.ndarray]:
    """An irregular grid of cells (random cuts) plus a few free cells, and 4 random boxes, coordinates on `step`."""
    W, H = size
    cx = np.unique(np.concatenate([[0, W], rng.integers(1, W / step, 5) * step]))
    cy = np.unique(np.concatenate([[0, H], rng.integers(1, H / step, 4) * step]))
    cells = [(a, b, c, d) for b, d in zip(cy[:-1], cy[1:], strict=True) for a, c in zip(cx[:-1], cx[1:], strict=True)]
    for _ in range(4):  # overlapping free cells, as tiles and a base image overlap
        x0, y0 = rng.integers(0, W / step - 1) * step, rng.integers(0, H / step - 1) * step
        cells.append((x0, y0, min(W, x0 + rng.integers(1, 12) * step), min(H, y0 + rng.integers(1, 12) * step)))
    boxes = [(rng.integers(-4, W / step) * step, rng.integers(-4, H / step) * step) for _ in range(4)]
    boxes = [(x, y, rng.integers(1, 40) * step, rng.integers(1, 40) * step) for x, y in boxes]
    return np.array(cells, dtype=float), np.array(boxes, dtype=float)


def test_against_a_pixel_rasterisation_aligned():
    """Coordinates on the raster's pitch: the pixel count is exact, so the two agree to rounding."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        cells, boxes = _random_layout(rng, (24, 20), 0.25)
        assert_close(
            target_weights(cells, boxes), _raster_weights(cells, boxes, (24, 20), 0.25), dtype=np.float64, scale=1.0
        )


def test_against_a_pixel_rasterisation_unaligned():
    """Coordinates off the raster: an edge moves a pixel count by at most one raster row or column along its length,
    so |w − w_raster| ≤ r · (2 · cell perimeter (the count inside and the cell's count) + Σ perimeters of the boxes
    clipped to the cell) / cell area, plus corners."""
    rng = np.random.default_rng(1)
    r = 1 / 32
    for _ in range(3):
        cells, boxes = _random_layout(rng, (16, 12), 0.1)
        cells = cells + rng.uniform(0, 0.05, cells.shape)
        exact, raster = target_weights(cells, boxes), _raster_weights(cells, boxes, (17, 13), r)
        for c, e, a in zip(cells, exact, raster, strict=True):
            wc, hc = c[2] - c[0], c[3] - c[1]
            clip_w = np.clip(np.minimum(c[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(c[0], boxes[:, 0]), 0, None)
            clip_h = np.clip(np.minimum(c[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(c[1], boxes[:, 1]), 0, None)
            edges = 4 * (wc + hc) + 2 * ((clip_w + clip_h) * (clip_w * clip_h > 0)).sum()
            assert abs(e - a) <= r * (edges + 4 * r) / (wc * hc), (c, e, a)


def test_grounding_record_by_hand():
    """One sample on the 2x2 grid: two layers, two heads; the record's keys from the hand-computed metrics."""
    geometry = ImageGeometry(image_size=(20, 20), cells=GRID, grid=(2, 2))
    a = np.array([[[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], [[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]])
    p = renormalise(a)  # layer 1 head 0 has no image mass: uniform
    sample = Sample(id="s", question="q", answers=("a",), boxes=((0.0, 0.0, 15.0, 5.0),))  # w = 0.5, 0.25, 0, 0
    r = grounding_record(sample, geometry, p)
    # head/layer mean: ((.1,.2,.3,.4) + (.4,.3,.2,.1) + (.25,.25,.25,.25) + (0,1,0,0)) / 4
    mean = [0.1875, 0.4375, 0.1875, 0.1875]
    assert r["image_size"] == [20, 20] and r["image_grid"] == [2, 2]
    assert_close(r["attention_image"], mean, dtype=np.float64, scale=1.0)
    by_layer = [[0.25, 0.25, 0.25, 0.25], [0.125, 0.625, 0.125, 0.125]]  # each layer's head mean
    assert_close(r["attention_image_by_layer"], by_layer, dtype=np.float64, scale=1.0)
    assert r["target_area"] == pytest.approx(0.1875, abs=1e-15)
    on = 0.1875 * 0.5 + 0.4375 * 0.25  # 0.203125
    assert_close(r["attention_on_target"], on, dtype=np.float64, scale=1.0)
    assert_close(r["attention_lift"], on / 0.1875, dtype=np.float64, scale=2.0)
    assert r["pointing_hit"] == 1.0  # exact: the peak (0.4375) is the top-right cell, w = 0.25 > 0
    # layer 0: (.25, .25, .25, .25) → on .1875, lift 1, peak the first cell; layer 1: (.125, .625, .125, .125)
    assert_close(r["attention_on_target_by_layer"], [0.1875, 0.21875], dtype=np.float64, scale=1.0)
    assert_close(r["attention_lift_by_layer"], [1.0, 0.21875 / 0.1875], dtype=np.float64, scale=2.0)
    assert r["pointing_hit_by_layer"] == [1.0, 1.0]  # exact: indicators (layer 0 ties: the first cell, w = 0.5)
    assert_close(r["attention_on_target_by_head"], [[0.1, 0.275], [0.1875, 0.25]], dtype=np.float64, scale=1.0)
    plain = grounding_record(replace(sample, boxes=None), geometry, p)
    assert set(plain) == {"image_size", "image_grid", "attention_image", "attention_image_by_layer"}
    assert set(grounding_record(replace(sample, boxes=()), geometry, p)) == set(plain)
    no_grid = grounding_record(sample, replace(geometry, grid=None), p)
    assert "attention_image" not in no_grid and "attention_image_by_layer" not in no_grid
    with pytest.raises(VrprobeError, match="4 image tokens but the image geometry maps 3"):
        grounding_record(sample, replace(geometry, cells=GRID[:3]), p)


GROUNDED = (
    "boxes",
    "target_area",
    "attention_on_target",
    "attention_lift",
    "pointing_hit",
    "attention_on_target_by_layer",
    "attention_lift_by_layer",
    "pointing_hit_by_layer",
    "attention_on_target_by_head",
)


def test_records_of_the_answer_forward(adapter):
    """score_batch's grounding keys against the attention recorded in a separate forward and the metrics recomputed
    from the record: attention_image renormalised per layer and head then averaged, on target = Σ p w, per-layer and
    per-head values averaging to the overall ones, and no grounded key for samples without boxes."""
    samples = load_dataset("easy-vqa:test", limit=6).samples
    boxes: list[tuple[tuple[float, float, float, float], ...] | None] = [
        ((8.0, 8.0, 20.0, 16.0),),
        ((0.0, 0.0, 32.0, 64.0), (16.0, 40.0, 40.0, 20.5)),  # overlapping
        None,  # a dataset without boxes
        (),  # a sample without a target (a POPE "no")
        ((50.5, 2.0, 30.0, 9.0),),  # partly outside the 64x64 image
        ((20.0, 20.0, 24.0, 24.0),),
    ]
    samples = [replace(s, boxes=b) for s, b in zip(samples, boxes, strict=True)]
    batch = adapter.encode_samples(samples)
    records = score_batch(adapter, samples, batch)
    site = Site("attn_probs", tuple(range(adapter.num_layers)), "last")
    with torch.no_grad(), intervene(adapter, batch.groups, record=[site]) as rec:
        adapter.forward(batch, use_cache=False)
    attention = rec.stacked(site).double()  # [L, B, H, S]
    for i, (s, r) in enumerate(zip(samples, records, strict=True)):
        geometry = adapter.image_geometry(batch.items[i])
        a = attention[:, i][:, :, batch.groups.image[i]]  # [L, H, N]
        p = (a / a.sum(-1, keepdim=True)).numpy()
        assert r["image_size"] == list(s.load_image().size)
        if geometry.grid is not None:
            assert r["image_grid"] == list(geometry.grid) and len(r["attention_image"]) == p.shape[-1]
            assert_close(sum(r["attention_image"]), 1.0, dtype=np.float64, scale=1.0, ulps=p.shape[-1])
            assert_close(r["attention_image"], p.mean((0, 1)), dtype=torch.float32, scale=1.0, ulps=FORWARD)
        else:
            assert "attention_image" not in r and "image_grid" not in r
        if not s.boxes:
            assert not set(GROUNDED) & set(r), f"grounded keys without boxes: {set(GROUNDED) & set(r)}"
            continue
        w = target_weights(geometry.cells, s.boxes)
        mean = np.asarray(r.get("attention_image", p.mean((0, 1))))
        assert r["boxes"] == [list(b) for b in s.boxes]  # exact: copied
        assert r["target_area"] == pytest.approx(float(w.mean()), abs=1e-12)
        assert 0 < r["target_area"] < 1
        assert_close(r["attention_on_target"], float(mean @ w), dtype=np.float64, scale=1.0, ulps=p.shape[-1])
        assert_close(r["attention_lift"], r["attention_on_target"] / r["target_area"], dtype=np.float64, ulps=64)
        assert r["pointing_hit"] == float(w[int(np.argmax(mean))] > 0)  # exact: an indicator of the same argmax
        L, H = p.shape[:2]
        by_layer, by_head = np.array(r["attention_on_target_by_layer"]), np.array(r["attention_on_target_by_head"])
        assert by_layer.shape == (L,) and by_head.shape == (L, H) and len(r["pointing_hit_by_layer"]) == L
        assert_close(by_head, p @ w, dtype=torch.float32, scale=1.0, ulps=FORWARD)
        assert_close(by_head.mean(1), by_layer, dtype=np.float64, scale=1.0, ulps=H)  # linear: means commute
        assert_close(by_layer.mean(), r["attention_on_target"], dtype=np.float64, scale=1.0, ulps=L)
        assert_close(np.mean(r["attention_lift_by_layer"]), r["attention_lift"], dtype=np.float64, ulps=64)
        assert r["pointing_hit_by_layer"] == [float(w[int(np.argmax(q))] > 0) for q in p.mean(1)]


def test_cells_are_kept_only_where_the_grid_does_not_tile_the_image():
    from vrprobe.registry import load_adapter
    from vrprobe.scoring.grounding import tiles_whole_image

    even = np.array([[0, 0, 10, 7.5], [10, 0, 20, 7.5], [0, 7.5, 10, 15], [10, 7.5, 20, 15]], dtype=float)
    assert tiles_whole_image(even, (2, 2), (20, 15))
    assert not tiles_whole_image(even + [1, 0, 1, 0], (2, 2), (20, 15))  # shifted by a pixel
    assert not tiles_whole_image(even, (2, 2), (21, 15))  # the grid misses a column of the image
    # zoo:llava's processor resizes the shortest side and centre-crops: a wide image's left and right edges are cut,
    # so its record keeps each token's cell; a square image is tiled evenly and keeps none.
    llava = load_adapter("zoo:llava")
    base = load_dataset("easy-vqa:test", limit=2).samples[0]
    wide = replace(base, id="wide", image_fn=lambda: base.load_image().resize((96, 64)))
    square, cropped = score_batch(llava, [base]), score_batch(llava, [wide])
    assert "image_cells" not in square[0]
    cells = np.array(cropped[0]["image_cells"])
    assert cells.shape == (16, 4)
    assert cells[:, 0].min() == pytest.approx(16.0) and cells[:, 2].max() == pytest.approx(80.0)  # the 64-px crop
