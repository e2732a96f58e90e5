"""Image tokens → original-image regions (`Adapter.image_geometry`), checked against `pixel_values` itself.

Per model type and image (a wide 200×130 and a tall 90×170 one, neither the processor's size): a flat image and the
same image with a block painted over it go through the adapter's own encoding; a vision patch "shows the block" by
the fraction of its pixel values that differ between the two. Each image token's value is assembled from its
patches by the model's own code where the model rearranges them (LLaVA-NeXT / OneVision `pack_image_features` with
its unpadding and newlines, Idefics3's and InternVL's pixel shuffle, Gemma 3's average pool, Mistral 3's patch
merger; Qwen's merge groups are consecutive rows of `pixel_values`). The block is placed to fully cover some cells
(from the flat image's geometry); then every token whose cell lies inside the block shows it in all its pixels,
every token whose cell is more than half a cell away from the block shows nothing (resampling blurs only a few pixels
across a border), every token with at least half its cell inside shows something, and newline tokens have
zero-area cells.

Types: the three zoo models, the three real checkpoints' processors (`tests/replicas.py`; skipped when
`../shared/replicas` is absent) and the eight tiny other types (`tiny_qwen_types`, `tiny_other_types`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import replicas
from tiny_other_types import BUILDERS as OTHER
from tiny_qwen_types import BUILDERS as QWEN
from vrprobe.models.geometry import ImageGeometry, View
from vrprobe.registry import load_adapter

SIZES = ((200, 130), (90, 170))
#: where the blocks go on each image (fractions of width and height): near opposite corners, so that far cells exist
#: on coarse grids and a wrong scale shows at one end or the other
AT = {(200, 130): ((0.15, 0.2), (0.85, 0.8)), (90, 170): ((0.2, 0.15), (0.8, 0.85))}
FLAT, PAINT = (40, 120, 200), (230, 30, 20)
QUESTION = "what colour is the shape?"
TOL = 1e-4  # a pixel value "differs" above this (normalised units); untouched pixels are bit-identical
TINY = {**QWEN, **OTHER}
ZOO = ("llava", "paligemma", "qwen2vl")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    cache: dict[str, object] = {}

    def get(key: str):
        if key not in cache:
            kind, name = key.split(":")
            if kind == "zoo":
                cache[key] = load_adapter(key)
            elif kind == "replica":
                cache[key] = load_adapter(str(replicas.build(name, tmp_path_factory.mktemp(f"replica-{name}"))))
            else:
                cache[key] = load_adapter(str(TINY[name](tmp_path_factory.mktemp(name))))
        return cache[key]

    return get


# ---- per-token pixel values, assembled as the model assembles its image features ----------------------------------
def _patch_map(views: torch.Tensor, patch: int) -> torch.Tensor:
    """[V, C, H, W] differing flags → [V, H/patch, W/patch]: the fraction of each patch's values that differ."""
    v, c, h, w = views.shape
    return views.view(v, c, h // patch, patch, w // patch, patch).mean(dim=(1, 3, 5))


def token_values(adapter, flat: dict, painted: dict) -> torch.Tensor:
    """Per image token (in `input_ids` order): the fraction of its pixels that the block changed; NaN for newline
    tokens (they read no pixels)."""
    cfg = adapter.model.config
    kind = cfg.model_type
    diff = ((painted["pixel_values"] - flat["pixel_values"]).abs() > TOL).float()
    patch = cfg.vision_config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    model = adapter.model.model
    if kind in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        merge = adapter.processor.image_processor.merge_size
        return diff.mean(dim=1).view(-1, merge * merge).mean(dim=1)
    if kind in ("llava", "paligemma"):
        return _patch_map(diff, patch).flatten()
    if kind == "gemma3":
        pooled = model.multi_modal_projector.avg_pool(_patch_map(diff, patch)[:, None])
        return pooled.flatten()
    if kind == "mistral3":
        h, w = (int(x) for x in painted["image_sizes"][0])
        grid = _patch_map(diff[:, :, :h, :w], patch)  # [1, h/p, w/p]
        merger = type(model.multi_modal_projector.patch_merger)(cfg)
        hidden, m = cfg.vision_config.hidden_size, cfg.spatial_merge_size
        with torch.no_grad():  # output channel 0 = mean of input channel 0 over the m² merged patches
            merger.merging_layer.weight.zero_()
            merger.merging_layer.weight[0, : m * m] = 1.0 / (m * m)
        feats = torch.zeros(grid.numel(), hidden)
        feats[:, 0] = grid.flatten()
        return merger(feats, painted["image_sizes"])[:, 0].detach()
    if kind in ("llava_next", "llava_onevision"):
        views = diff[0]
        feats = _patch_map(views, patch).flatten(1)[..., None]  # [V, patches, 1]
        newline = torch.tensor([float("nan")])
        extra = (
            {"vision_feature_select_strategy": cfg.vision_feature_select_strategy}
            if kind == "llava_next"
            else {"vision_aspect_ratio": cfg.vision_aspect_ratio}
        )
        packed, _ = model.pack_image_features([feats], painted["image_sizes"], image_newline=newline, **extra)
        return packed[0][:, 0]
    if kind == "idefics3":
        feats = _patch_map(diff[0], patch).flatten(1)[..., None]
        return model.connector.pixel_shuffle(feats, cfg.scale_factor).mean(-1).flatten()
    if kind == "internvl":
        feats = _patch_map(diff, patch)[..., None]
        return model.pixel_shuffle(feats, scale_factor=cfg.downsample_ratio).mean(-1).flatten()
    raise AssertionError(f"no pixel layout for {kind}")


# ---- the block and the expectations ----------------------------------------------------------------------------
def place_block(geo: ImageGeometry, at: tuple[float, float]) -> tuple[int, int, int, int]:
    """A block whose edges lie on cell borders: the median-area cell nearest point `at` (fractions of the image's
    width and height) and its neighbours towards the image's centre in its grid (2 × 2 cells), rounded out to whole
    pixels."""
    width, height = geo.image_size
    cells = geo.cells
    area = (cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])
    real = np.flatnonzero(area > 0)
    median = np.median(area[real])
    near = real[np.abs(area[real] - median) <= 0.5 * median]
    if not near.size:  # two sizes of cells, as many of each (padding cuts a row): the larger ones
        near = real[area[real] >= median]
    centre = (cells[near, :2] + cells[near, 2:]) / 2
    x0, y0, x1, y1 = cells[near[np.argmin(np.hypot(*(centre - [at[0] * width, at[1] * height]).T))]]
    if at[0] > 0.5:
        x0 -= x1 - x0
    else:
        x1 += x1 - x0
    if at[1] > 0.5:
        y0 -= y1 - y0
    else:
        y1 += y1 - y0
    return max(0, math.floor(x0)), max(0, math.floor(y0)), min(width, math.ceil(x1)), min(height, math.ceil(y1))


def overlap(cells: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    w = np.clip(np.minimum(cells[:, 2], box[2]) - np.maximum(cells[:, 0], box[0]), 0, None)
    h = np.clip(np.minimum(cells[:, 3], box[3]) - np.maximum(cells[:, 1], box[1]), 0, None)
    return w * h


def check_against_pixels(adapter, size: tuple[int, int]) -> None:
    flat_image = Image.new("RGB", size, FLAT)
    flat = adapter.encode_one(flat_image, QUESTION)
    geo = adapter.image_geometry(flat)
    n = int((flat.inputs["input_ids"][0] == adapter.image_token_id).sum())
    cells = geo.cells
    assert geo.image_size == size and cells.shape == (n, 4) and cells.dtype == np.float64
    assert (cells[:, 0] <= cells[:, 2]).all() and (cells[:, 1] <= cells[:, 3]).all()
    assert cells.min() >= 0 and (cells[:, 2] <= size[0]).all() and (cells[:, 3] <= size[1]).all()
    if geo.grid is not None:
        assert geo.grid[0] * geo.grid[1] == n
    area = (cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])
    # the share of each token's pixels that show the image at all (the rest is padding): painting it all changes them
    content = token_values(adapter, flat.inputs, adapter.encode_one(Image.new("RGB", size, PAINT), QUESTION).inputs)
    content = content.double().numpy()
    newline = np.isnan(content)
    assert (area[newline] == 0).all(), "newline tokens get zero-area cells"
    assert (content[~newline & (area == 0)] == 0).all(), "zero-area cells: tokens that see only padding"
    assert (content[area > 0] > 0).all(), "cells with an area: tokens that see the image"

    for at in AT[size]:
        block = place_block(geo, at)
        painted_image = flat_image.copy()
        painted_image.paste(PAINT, block)
        painted = adapter.encode_one(painted_image, QUESTION)
        assert adapter.image_geometry(painted).cells.tolist() == cells.tolist()  # it depends on the size only
        values = token_values(adapter, flat.inputs, painted.inputs).double().numpy()
        inside = overlap(cells, block)
        covered = (area > 0) & (inside >= area - 1e-9)
        w, h = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
        grown = np.stack([cells[:, 0] - w / 2, cells[:, 1] - h / 2, cells[:, 2] + w / 2, cells[:, 3] + h / 2], 1)
        far = ~newline & ((area == 0) | (overlap(grown, block) == 0))
        half = (area > 0) & (inside >= 0.5 * area)
        beside = (area > 0) & (inside == 0)
        assert covered.any() and far.any(), (block, covered.sum(), far.sum())
        missed = np.flatnonzero(covered & (values < content - 1e-9))
        assert not missed.size, f"block {block}: cells inside it whose image pixels miss it {missed}"
        # exact: a mean of flags that are all 0, those pixels being bit-identical in the two encodings
        assert (values[far] == 0).all(), f"block {block}: far cells that show it {np.flatnonzero(far & (values != 0))}"
        assert (values[half] > 0).all(), f"block {block}: cells half inside it that show nothing"
        # a cell beside the block sees at most its blurred edge (a few pixels of the cell's)
        assert (values[beside] < 0.5).all(), f"block {block}: cells beside it that show it"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("family", ZOO)
def test_zoo_regions_match_pixel_values(adapters, family, size):
    check_against_pixels(adapters(f"zoo:{family}"), size)


@pytest.mark.skipif(not replicas.available(), reason=f"../shared/replicas is absent ({replicas.REPLICAS})")
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("family", replicas.FAMILIES)
def test_real_processor_regions_match_pixel_values(adapters, family, size):
    adapter = adapters(f"replica:{family}")
    check_against_pixels(adapter, size)
    geo = adapter.image_geometry(adapter.encode_one(Image.new("RGB", size, FLAT), QUESTION))
    assert geo.grid == REAL_GRIDS[family][size]


#: the real checkpoints' token grids, by hand: LLaVA-1.5 336 px / 14 px = 24² = 576; PaliGemma-224 224 / 14 = 16²;
#: Qwen2-VL-2B (min 3136, max 12845056 pixels, factor 14 × 2 = 28): 200×130 → round(130/28), round(200/28) = 5, 7
#: units of 28 px (140×196, within the bounds); 90×170 → round(170/28), round(90/28) = 6, 3
REAL_GRIDS = {
    "llava": {(200, 130): (24, 24), (90, 170): (24, 24)},
    "paligemma": {(200, 130): (16, 16), (90, 170): (16, 16)},
    "qwen2vl": {(200, 130): (5, 7), (90, 170): (6, 3)},
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("model_type", tuple(TINY))
def test_other_type_regions_match_pixel_values(adapters, model_type, size):
    check_against_pixels(adapters(f"tiny:{model_type}"), size)


def test_view_maps_back_by_hand():
    """A 200×130 image, shortest side resized to 64 (98×64) and centre-cropped to 64: crop offset (98 − 64) // 2 =
    17 px, i.e. 17 · 200/98 original px; a 4×4 grid's first cell spans 64/4 · 200/98 px wide, 130/4 px high."""
    view = View(200, 130).resize(98, 64).crop(17, 0, 64, 64)
    cells = view.cells(4, 4)
    s = 200 / 98
    np.testing.assert_allclose(cells[0], [17 * s, 0, 33 * s, 32.5], rtol=1e-12)
    np.testing.assert_allclose(cells[-1], [65 * s, 97.5, 81 * s, 130], rtol=1e-12)
    padded = View(100, 50).crop(0, -25, 100, 100).cells(2, 2)  # pad to a square, 25 px above and below
    np.testing.assert_allclose(padded[0], [0, -25, 50, 25])


@pytest.mark.parametrize("size", SIZES)
def test_gemma3_pan_and_scan_regions_match_pixel_values(adapters, size):
    """Gemma 3 with pan-and-scan on (the processor's own setting, which its image kwargs hold): the full image, then
    each crop, every one a 4 × 4 pooled grid; no single grid."""
    adapter = adapters("tiny:gemma3")
    proc = adapter.processor
    proc.images_kwargs = {**type(proc).images_kwargs, "do_pan_and_scan": True, "pan_and_scan_min_crop_size": 16}
    try:
        item = adapter.encode_one(Image.new("RGB", size, FLAT), QUESTION)
        assert item.inputs["pixel_values"].shape[0] == 3  # the image and two crops
        assert adapter.image_geometry(item).grid is None
        check_against_pixels(adapter, size)
    finally:
        del proc.images_kwargs  # back to the class's settings


@pytest.mark.parametrize("size", SIZES)
def test_llava_pad_to_square_regions_match_pixel_values(adapters, size):
    """LLaVA's own image processor with `do_pad` (pad to a square in the mean colour, then resize and crop): the
    rows or columns of tokens over the padding get cells cut to the image."""
    from transformers import LlavaImageProcessorPil

    adapter = adapters("zoo:llava")
    clip = adapter.processor.image_processor
    adapter.processor.image_processor = LlavaImageProcessorPil(
        size=dict(clip.size), crop_size=dict(clip.crop_size), do_pad=True
    )
    try:
        check_against_pixels(adapter, size)
        first = adapter.image_geometry(adapter.encode_one(Image.new("RGB", size, FLAT), QUESTION)).cells[0]
    finally:
        adapter.processor.image_processor = clip
    # by hand: 200×130 is padded by (200 − 130) // 2 = 35 px above, to 200², resized to 64² (16-px patches = 50 px):
    # the first cell spans y −35…15, cut to 0…15; 90×170 by 40 px on the left, to 170², patches of 42.5 px
    expected = {(200, 130): [0, 0, 50, 15], (90, 170): [0, 0, 2.5, 42.5]}[size]
    np.testing.assert_allclose(first, expected, rtol=1e-12)


def test_llava_kept_cls_token_covers_the_crop(adapters):
    """vision_feature_select_strategy "full" keeps CLIP's CLS feature: one more image token, first, whose cell is the
    whole centre crop; the patch tokens' cells stay as they were; no single grid."""
    adapter = adapters("zoo:llava")
    image = Image.new("RGB", (200, 130), FLAT)
    default = adapter.image_geometry(adapter.encode_one(image, QUESTION))
    adapter.processor.vision_feature_select_strategy = "full"
    try:
        full = adapter.image_geometry(adapter.encode_one(image, QUESTION))
    finally:
        adapter.processor.vision_feature_select_strategy = "default"
    assert default.grid == (4, 4) and full.grid is None and len(full.cells) == 17
    np.testing.assert_array_equal(full.cells[1:], default.cells)
    np.testing.assert_allclose(full.cells[0], [*default.cells[0, :2], *default.cells[-1, 2:]], rtol=1e-12)


def test_unknown_type_and_missing_size_refused(adapters):
    from transformers import Blip2Config

    from vrprobe.errors import VrprobeError
    from vrprobe.models.base import Encoded
    from vrprobe.models.geometry import image_geometry

    adapter = adapters("zoo:llava")
    item = adapter.encode_one(Image.new("RGB", (200, 130), FLAT), QUESTION)
    with pytest.raises(VrprobeError, match="not known for model type 'blip-2'"):
        image_geometry(adapter.processor, Blip2Config(), item.inputs, item.image_size)
    with pytest.raises(VrprobeError, match="no image size"):
        adapter.image_geometry(Encoded(inputs=item.inputs, question_span=item.question_span))
