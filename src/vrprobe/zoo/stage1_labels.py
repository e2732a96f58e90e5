"""Stage-1 labels: what the image pathway is taught before the whole VLM trains (`train.py`).

- easy-VQA: one label per image, its shape and its colour, read off the train questions' answers.
- scenes: one label per image token: the colour, shape and size of the object that covers the most of the token's
  cell (`Adapter.image_geometry`, so any processor's token order and crop are followed), if it covers at least
  `MIN_COVER` of the cell; class 0 = background. Coverage counts the object's own pixels (its colour, inside its box:
  scenes draws without antialiasing and boxes never overlap), so a triangle's empty corners are background.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vrprobe.data.sample import Sample
from vrprobe.data.scenes import COLORS, NAMES, SHAPES, SIDES
from vrprobe.models.base import Adapter, Encoded

MIN_COVER = 0.125  # of a cell's area


def easy_vqa_labels(n_images: int, answers: Sequence[tuple[str, int]]) -> dict[str, torch.Tensor]:
    """Per-image shape (3 classes) and colour (8) from (answer, image index) pairs; -100 where no question tells.
    Class ids follow `SHAPES` and `NAMES`: easy-VQA's shapes and colours, in the order the committed zoo used."""
    shape = torch.full((n_images,), -100)
    color = torch.full((n_images,), -100)
    for a, img in answers:
        if a in SHAPES:
            shape[img] = SHAPES.index(a)
        elif a in NAMES:
            color[img] = NAMES.index(a)
    return {"shape": shape, "color": color}


def cell_owner(image: np.ndarray, objects: Sequence[dict], cells: np.ndarray) -> np.ndarray:
    """For each cell (x0, y0, x1, y1), the index of the object covering most of it (≥ `MIN_COVER`), else -1."""
    owner = np.full(len(cells), -1)
    best = np.zeros(len(cells))
    for i, o in enumerate(objects):
        x, y, w, h = (int(v) for v in o["box"])
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[y : y + h, x : x + w] = (image[y : y + h, x : x + w] == COLORS[o["color"]]).all(-1)
        for c, (x0, y0, x1, y1) in enumerate(cells):
            area = max(1.0, (x1 - x0) * (y1 - y0))
            cover = mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].sum() / area
            if cover >= MIN_COVER and cover > best[c]:
                owner[c], best[c] = i, cover
    return owner


def scenes_labels(adapter: Adapter, samples: Sequence[Sample], encoded: Sequence[Encoded]) -> dict[str, torch.Tensor]:
    """Per-token colour (9 classes: background, easy-VQA's 8), shape (4) and size (3) for each image's sample and its
    encoding (a token whose cell no object covers enough is background)."""
    colors, shapes, sizes = list(COLORS), list(SHAPES), list(SIDES)
    out: dict[str, list[np.ndarray]] = {"color": [], "shape": [], "size": []}
    for sample, enc in zip(samples, encoded, strict=True):
        cells = adapter.image_geometry(enc).cells
        objects = sample.meta["objects"]
        owner = cell_owner(np.asarray(sample.load_image()), objects, cells)
        for name, values in (("color", colors), ("shape", shapes), ("size", sizes)):
            table = np.array([0] + [values.index(o[name]) + 1 for o in objects])
            out[name].append(table[owner + 1])
    return {name: torch.as_tensor(np.stack(rows)) for name, rows in out.items()}
