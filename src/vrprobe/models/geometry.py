"""From image tokens to image regions: the rectangle of the *original* image each image-token position covers.

`ImageGeometry` holds, for one encoded sample, one cell `(x0, y0, x1, y1)` in original-image pixels per image token,
in the order the tokens appear in `input_ids`, and the token grid `(rows, cols)` when the tokens form one row-major
grid over the image. `image_geometry(processor, config, item, n_tokens)` computes it by following the processor's
own steps (its settings as the processor merges them, its outputs `image_grid_thw` / `image_sizes`, the model's
config) through a `View`: an image the vision tower sees, as an affine map from its pixels back to the original's.

Per model type (the README's "Image regions" gives the same list):
- llava (CLIP): pad to a square first when the image processor pads (LlavaImageProcessor `do_pad`), resize
  (`size`: shortest edge, or height × width), centre crop (`crop_size`); tokens = the crop's `patch_size` grid
  (a kept CLS token, strategy "full", covers the whole crop and comes first; then `grid` is None);
- paligemma (SigLIP): plain resize to `size`; grid = the pixel grid / the vision patch size;
- qwen2_vl, qwen2_5_vl, qwen3_vl: plain resize to `image_grid_thw` × patch size; one token per merge × merge
  patches, grid (h / merge, w / merge);
- gemma3: plain resize to `size`, patches average-pooled to √mm_tokens_per_image per side; with pan-and-scan, the
  full image then each crop (grid None);
- mistral3 (Pixtral): plain resize to `image_sizes`, one `[IMG]` per patch × spatial_merge_size square, row-major
  (`[IMG_BREAK]` / `[IMG_END]` are not image tokens);
- llava_next, llava_onevision (anyres): the base image (resized to `size`) grid first, then the tile grid over the
  padded canvas of the best pinpoint resolution, unpadded as the model unpads it, one newline token (a zero-area
  cell at the row's right end) after each row; LLaVA-OneVision's bilinear feature downscaling (`anyres_max_N`,
  when the unpadded grid is over 1.1² × N tiles) is approximated by an even grid over the unpadded region;
- idefics3: resize (longest edge), resize to multiples of the tile size, tiles row-major then the global image
  (the whole image resized to one tile), each tile √image_seq_len per side (patches pixel-shuffled);
- internvl: `crop_to_patches` tiles (the aspect-ratio grid the image processor picks) row-major then the thumbnail,
  each √image_seq_length per side (pixel shuffle).

Cells are clipped to [0, W] × [0, H]; a token that sees only padding has a zero-area cell. Resampling filters blur
a few pixels across cell borders (a token's features also mix the whole image through attention): a cell is where
the token's own pixels come from, not all that it encodes. Another model type raises `VrprobeError`.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vrprobe.errors import VrprobeError

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
ANYRES_TYPES = ("llava_next", "llava_onevision")
#: the cells of one image's tokens and their grid (rows, cols), None when they form several grids
Cells = tuple[np.ndarray, tuple[int, int] | None]


@dataclass(frozen=True)
class ImageGeometry:
    """Where each image token of one encoded sample looks in the original image.

    `image_size`: (width, height) of the original image in pixels. `cells` [N, 4] float64: (x0, y0, x1, y1) of the
    original-image rectangle each image-token position covers, in `input_ids` order, clipped to the image; zero area
    for a token that covers only padding or is a row separator. `grid`: (rows, cols) when the N tokens form one
    row-major grid over the image (N == rows × cols), else None (tiled processors, a kept CLS token).
    """

    image_size: tuple[int, int]
    cells: np.ndarray
    grid: tuple[int, int] | None


@dataclass(frozen=True)
class View:
    """An image the vision tower sees, `width` × `height` pixels, whose pixel (x, y) lies at original-image point
    (ox + x · sx, oy + y · sy): resizing scales the map, cropping and padding shift it."""

    width: float
    height: float
    sx: float = 1.0
    sy: float = 1.0
    ox: float = 0.0
    oy: float = 0.0

    def resize(self, width: float, height: float) -> View:
        """The view resampled to `width` × `height` (every filter maps the whole input onto the whole output)."""
        fx, fy = self.width / width, self.height / height
        return View(width, height, self.sx * fx, self.sy * fy, self.ox, self.oy)

    def crop(self, left: float, top: float, width: float, height: float) -> View:
        """The `width` × `height` window at (left, top); negative offsets or a larger size pad the view."""
        return View(width, height, self.sx, self.sy, self.ox + left * self.sx, self.oy + top * self.sy)

    def cells(self, rows: int, cols: int) -> np.ndarray:
        """[rows · cols, 4] row-major cells of an even `rows` × `cols` grid over the view, in original pixels."""
        ys, xs = np.linspace(0.0, self.height, rows + 1), np.linspace(0.0, self.width, cols + 1)
        y0, x0 = np.meshgrid(ys[:-1], xs[:-1], indexing="ij")
        y1, x1 = np.meshgrid(ys[1:], xs[1:], indexing="ij")
        out = np.stack([x0, y0, x1, y1], axis=-1).reshape(-1, 4)
        return out * [self.sx, self.sy, self.sx, self.sy] + [self.ox, self.oy, self.ox, self.oy]


def image_geometry(
    processor: Any, config: Any, inputs: dict[str, torch.Tensor], size: tuple[int, int]
) -> ImageGeometry:
    """The geometry of one processed sample: `inputs` (the processor's outputs, batch dim 1), `size` (the original
    image's (width, height)), the model `config` (its `model_type` picks the rule; see the module docstring)."""
    kind = str(config.model_type)
    width, height = size
    rules = {
        "llava": _llava,
        "paligemma": _paligemma,
        "gemma3": _gemma3,
        "mistral3": _pixtral,
        "idefics3": _idefics3,
        "internvl": _internvl,
        **{t: _qwen for t in QWEN_TYPES},
        **{t: _anyres for t in ANYRES_TYPES},
    }
    if kind not in rules:
        raise VrprobeError(f"image regions are not known for model type '{kind}' (known: {', '.join(sorted(rules))})")
    cells, grid = rules[kind](processor, config, inputs, View(width, height))
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 4)
    np.clip(cells[:, 0::2], 0.0, width, out=cells[:, 0::2])
    np.clip(cells[:, 1::2], 0.0, height, out=cells[:, 1::2])
    return ImageGeometry(image_size=(int(width), int(height)), cells=cells, grid=grid)


# ---- settings --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The image-processing settings a processor call uses: the processor's own image kwargs (its class settings and
    defaults, which `ProcessorMixin._merge_kwargs` puts over the image processor's), else the image processor's."""

    merged: dict[str, Any]
    image_processor: Any

    @classmethod
    def of(cls, processor: Any) -> Settings:
        try:
            merged = dict(processor._merge_kwargs()["images_kwargs"])
        except Exception:  # a processor whose kwargs do not merge without a call: the image processor's alone
            merged = {}
        return cls({k: v for k, v in merged.items() if v is not None}, processor.image_processor)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.merged.get(key, getattr(self.image_processor, key, None))
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise VrprobeError(f"image regions: the image processor has no '{key}' setting")
        return value


def _size(value: Any) -> dict[str, Any]:
    """A size setting as a plain dict (`size`, `crop_size`: a dict or transformers' `SizeDict`)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    if isinstance(value, int):
        return {"height": value, "width": value}
    return dict(value)


def _dummy(height: float, width: float) -> np.ndarray:
    """A zero-cost channels-first array of the given size, for transformers' size helpers that read `.shape`."""
    return np.broadcast_to(np.zeros((), dtype=np.uint8), (1, int(round(height)), int(round(width))))


def _resized(size: dict[str, Any], height: float, width: float) -> tuple[int, int]:
    """The (height, width) `PilBackend.resize` / `TorchvisionBackend.resize` gives an image for a `size` setting."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension, get_image_size_for_max_height_width

    h, w = int(round(height)), int(round(width))
    if size.get("shortest_edge") and size.get("longest_edge"):
        oh, ow = get_size_with_aspect_ratio((h, w), size["shortest_edge"], size["longest_edge"])
        return int(oh), int(ow)
    if size.get("shortest_edge"):
        out = get_resize_output_image_size(
            _dummy(h, w), size=size["shortest_edge"], default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
        return int(out[0]), int(out[1])
    if size.get("max_height") and size.get("max_width"):
        return get_image_size_for_max_height_width((h, w), size["max_height"], size["max_width"])
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    raise VrprobeError(f"image regions: cannot follow an image processor resize to {size}")


def _center_crop(view: View, crop: dict[str, Any]) -> View:
    """`center_crop` to crop["height"] × crop["width"]: offset (size - crop) // 2; a crop larger than the image pads
    it (the numpy backend's ceil((crop - size) / 2) before)."""
    ch, cw = int(crop["height"]), int(crop["width"])
    h, w = int(round(view.height)), int(round(view.width))
    top = (h - ch) // 2 if h >= ch else -math.ceil((ch - h) / 2)
    left = (w - cw) // 2 if w >= cw else -math.ceil((cw - w) / 2)
    return view.crop(left, top, cw, ch)


def _resize_crop(view: View, s: Settings) -> View:
    """`do_resize` to `size`, then `do_center_crop` to `crop_size`: the CLIP-style per-image steps."""
    if s.get("do_resize", True) and _size(s.get("size")):
        h, w = _resized(_size(s.get("size")), view.height, view.width)
        view = view.resize(w, h)
    if s.get("do_center_crop") and _size(s.get("crop_size")):
        view = _center_crop(view, _size(s.get("crop_size")))
    return view


def _patch(config: Any) -> int:
    patch = config.vision_config.patch_size
    return int(patch[0] if isinstance(patch, (list, tuple)) else patch)


def _count(inputs: dict[str, torch.Tensor], config: Any) -> int:
    image_id = getattr(config, "image_token_id", None)
    if image_id is None:
        image_id = config.image_token_index
    return int((inputs["input_ids"][0] == int(image_id)).sum())


def _check(kind: str, cells: list[np.ndarray] | np.ndarray, n: int) -> np.ndarray:
    out = np.concatenate(cells) if isinstance(cells, list) else cells
    if len(out) != n:
        raise VrprobeError(f"image regions: {kind} geometry gives {len(out)} cells for {n} image tokens")
    return out


# ---- one grid ----------------------------------------------------------------------------------------------------
def _llava(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    s = Settings.of(processor)
    if s.get("do_pad") and hasattr(processor.image_processor, "pad_to_square"):
        side = max(view.width, view.height)  # pad_to_square: centred, start = (max - side) // 2
        view = view.crop(-((side - view.width) // 2), -((side - view.height) // 2), side, side)
    view = _resize_crop(view, s)
    patch, n = _patch(config), _count(inputs, config)
    rows, cols = int(view.height) // patch, int(view.width) // patch
    cells = view.cells(rows, cols)
    extra = n - rows * cols  # a kept CLS token (vision_feature_select_strategy "full") comes first
    if extra == 1:
        return _check("llava", [view.cells(1, 1), cells], n), None
    return _check("llava", cells, n), (rows, cols)


def _paligemma(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    view = _resize_crop(view, Settings.of(processor))
    patch = _patch(config)
    rows, cols = int(view.height) // patch, int(view.width) // patch
    return _check("paligemma", view.cells(rows, cols), _count(inputs, config)), (rows, cols)


def _qwen(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    s = Settings.of(processor)
    merge, patch = int(s["merge_size"]), int(s["patch_size"])
    _, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
    view = view.resize(gw * patch, gh * patch)
    rows, cols = gh // merge, gw // merge
    return _check(str(config.model_type), view.cells(rows, cols), _count(inputs, config)), (rows, cols)


def _pixtral(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    unit = int(processor.patch_size) * int(processor.spatial_merge_size)
    height, width = (int(v) for v in inputs["image_sizes"][0])
    view = view.resize(width, height)
    rows, cols = height // unit, width // unit
    return _check("mistral3", view.cells(rows, cols), _count(inputs, config)), (rows, cols)


def _gemma3(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    s = Settings.of(processor)
    views = [view]
    if int(inputs["pixel_values"].shape[0]) > 1:  # pan-and-scan: the full image, then its crops
        ip = processor.image_processor  # the PIL image processor's `pan_and_scan`, torchvision's `..._batched`
        cut = getattr(ip, "pan_and_scan", None) or ip.pan_and_scan_batched
        crops = cut(
            _dummy(view.height, view.width),
            s["pan_and_scan_min_crop_size"],
            s["pan_and_scan_max_num_crops"],
            s["pan_and_scan_min_ratio_to_activate"],
        )
        shapes = [(int(c.shape[-2]), int(c.shape[-1])) for c in crops]
        offsets = _pan_and_scan_offsets(int(view.height), shapes)
        views += [view.crop(left, top, w, h) for (top, left), (h, w) in zip(offsets, shapes, strict=True)]
    side = math.isqrt(int(config.mm_tokens_per_image))
    cells = [_resize_crop(v, s).cells(side, side) for v in views]
    return _check("gemma3", cells, _count(inputs, config)), ((side, side) if len(views) == 1 else None)


def _pan_and_scan_offsets(height: int, shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(top, left) of the crops `pan_and_scan` cut (`shapes`, (height, width) each): one row of crops of the full
    height, or one column, at strides of the first crop's size (the last one may be cut short by the edge)."""
    if not shapes:
        return []
    stride_h, stride_w = shapes[0]
    if all(s[0] == height for s in shapes):  # one row of crops
        return [(0, i * stride_w) for i in range(len(shapes))]
    return [(i * stride_h, 0) for i in range(len(shapes))]


# ---- tiles -------------------------------------------------------------------------------------------------------
def _anyres(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    """LLaVA-NeXT / LLaVA-OneVision: base image, then the unpadded tile grid with a newline token after each row."""
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension

    kind = str(config.model_type)
    modeling = importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
    s = Settings.of(processor)
    size, crop = _size(s.get("size")), _size(s.get("crop_size"))
    base_hw = (size["height"], size["width"]) if size.get("height") else (size["shortest_edge"],) * 2
    tile = crop.get("height") or size.get("height") or size["shortest_edge"]
    height, width = (int(v) for v in inputs["image_sizes"][0])
    best = select_best_resolution((height, width), s["image_grid_pinpoints"])
    new_h, new_w = get_patch_output_size(_dummy(height, width), best, input_data_format=ChannelDimension.FIRST)
    pad_x, pad_y = (best[1] - new_w) // 2, (best[0] - new_h) // 2  # _get_padding_size: divmod(target - size, 2)
    canvas = view.resize(new_w, new_h).crop(-pad_x, -pad_y, best[1], best[0])

    side = int(config.vision_config.image_size) // _patch(config)  # features per tile side
    base = _resize_crop(view.resize(base_hw[1], base_hw[0]), s).cells(side, side)
    tiles_h, tiles_w = modeling.get_anyres_image_grid_shape(
        (height, width), config.image_grid_pinpoints, config.vision_config.image_size
    )
    rows, cols = tiles_h * side, tiles_w * side
    grid = np.zeros((rows, cols, 4))
    for r in range(tiles_h):
        for c in range(tiles_w):
            part = _resize_crop(canvas.crop(c * tile, r * tile, tile, tile), s).cells(side, side)
            grid[r * side : (r + 1) * side, c * side : (c + 1) * side] = part.reshape(side, side, 4)
    # the model's own unpadding, applied to the cell indices
    index = torch.arange(rows * cols).view(1, rows, cols)
    kept = modeling.unpad_image(index, torch.tensor([height, width]))[0]
    kept_rows, kept_cols = kept.shape
    cells = grid.reshape(-1, 4)[kept.reshape(-1).numpy()].reshape(kept_rows, kept_cols, 4)
    if kind == "llava_onevision":
        cells = _onevision_downscale(cells, side, str(config.vision_aspect_ratio))  # what the model is given
    newline = np.concatenate([cells[:, -1:, 2:3], cells[:, -1:, 1:2], cells[:, -1:, 2:3], cells[:, -1:, 3:4]], -1)
    packed = np.concatenate([cells, newline], axis=1).reshape(-1, 4)
    return _check(kind, [base, packed], _count(inputs, config)), None


def _onevision_downscale(cells: np.ndarray, side: int, aspect: str) -> np.ndarray:
    """LLaVA-OneVision's `pack_image_features`: an unpadded grid of over 1.1² × N tiles' features (`anyres_max_N`) is
    bilinearly resized to (h // ratio, w // ratio); its cells are approximated by an even grid over the region."""
    rows, cols = cells.shape[:2]
    ratio = math.sqrt(rows * cols / (int(aspect.removeprefix("anyres_max_")) * side**2))
    if ratio <= 1.1:
        return cells
    new_rows, new_cols = int(rows // ratio), int(cols // ratio)
    x0, y0, x1, y1 = cells[0, 0, 0], cells[0, 0, 1], cells[-1, -1, 2], cells[-1, -1, 3]
    region = View(new_cols, new_rows, (x1 - x0) / new_cols, (y1 - y0) / new_rows, x0, y0)
    return region.cells(new_rows, new_cols).reshape(new_rows, new_cols, 4)


def _idefics3(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    """Idefics3: resize to the longest edge, then to multiples of the tile; tiles row-major, then the global image."""
    idefics = importlib.import_module("transformers.models.idefics3.image_processing_pil_idefics3")
    s = Settings.of(processor)
    tile = int(_size(s.get("max_image_size"))["longest_edge"])
    if s.get("do_resize", True):
        h, w = idefics.get_resize_output_image_size(_dummy(view.height, view.width), _size(s["size"])["longest_edge"])
        view = view.resize(w, h)
    if s.get("do_image_splitting"):
        view = view.resize(*_multiples_of(tile, int(view.width), int(view.height)))
        if view.height > tile or view.width > tile:
            n_h, n_w = (int(view.height) - tile) // tile + 1, (int(view.width) - tile) // tile + 1
            views = [view.crop(c * tile, r * tile, tile, tile) for r in range(n_h) for c in range(n_w)]
            views.append(view.resize(tile, tile))
        else:
            views = [view]
    else:
        views = [view.resize(tile, tile)]
    per_side = math.isqrt(int(processor.image_seq_len))
    cells = [v.cells(per_side, per_side) for v in views]
    return _check("idefics3", cells, _count(inputs, config)), ((per_side,) * 2 if len(views) == 1 else None)


def _multiples_of(tile: int, width: int, height: int) -> tuple[int, int]:
    """Idefics3's `resize_for_vision_encoder`: (width, height) brought up to multiples of `tile`, the long side first
    and the short one from the aspect ratio."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return width, height


def _internvl(processor: Any, config: Any, inputs: dict[str, torch.Tensor], view: View) -> Cells:
    """InternVL (GotOcr2 image processor): the aspect-ratio tile grid row-major, then the thumbnail."""
    got = importlib.import_module("transformers.models.got_ocr2.image_processing_pil_got_ocr2")
    s = Settings.of(processor)
    size = _size(s["size"])
    th, tw = int(size["height"]), int(size["width"])
    views = [view.resize(tw, th)]
    if s.get("crop_to_patches") and int(s["max_patches"]) > 1:
        cols, rows = got.get_optimal_tiled_canvas(
            (int(view.height), int(view.width)), (th, tw), int(s["min_patches"]), int(s["max_patches"])
        )
        canvas = view.resize(tw * cols, th * rows)
        tiles = [canvas.crop(c * tw, r * th, tw, th) for r in range(rows) for c in range(cols)]
        views = tiles + views if len(tiles) > 1 else tiles
    per_side = math.isqrt(int(processor.image_seq_length))
    cells = [v.cells(per_side, per_side) for v in views]
    return _check("internvl", cells, _count(inputs, config)), ((per_side,) * 2 if len(views) == 1 else None)
