"""Target boxes as loaders receive them: validation, clipping, and the counted skips of samples with unusable boxes.

A box is `(x, y, w, h)` in original-image pixels (x, y the top-left corner). `check_boxes` decides per case:

- **clipped**: a box that pokes out of the image by at most `TOLERANCE` pixels (datasets round their coordinates) is
  clipped to the image.
- **skipped, counted** (`BoxSkip`): a negative width or height, a zero area (w or h = 0, or nothing left after
  clipping), or a box beyond the image by more than `TOLERANCE` pixels. The data is wrong for that sample only: the
  loader drops the sample, counts it under its reason, and reports all skips of one load in a single `DataWarning`
  (`Skips.report`): "SOURCE: skipped N of M samples: REASON × k (first: WHERE …)".
- **error** (`VrprobeError`, one line naming the file and sample): a box that is not four finite numbers, or an image
  size that is not two positive numbers: the file itself is malformed, not one annotation.

Loaders catch `BoxSkip` (a `VrprobeError` subclass, so a direct caller who does not still gets one clear line) and
use the same `Skips` for their own counted skips (a scene graph missing an annotated object, a POPE object without
instances). A load that skips every sample ends as an empty dataset, which `load_dataset` refuses.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vrprobe.data.sample import Box
from vrprobe.errors import VrprobeError

TOLERANCE = 1.0
"""How far (pixels) a box may extend past the image edge and still be clipped instead of refused."""


class DataWarning(UserWarning):
    """A dataset loaded with something left out: counted skips, or no boxes (no scene graphs, no COCO instances)."""


class BoxSkip(VrprobeError):
    """A box that makes its sample unusable; `reason` is the short category the skip is counted under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def as_box(value: Any, where: str) -> Box:
    """`[x, y, w, h]` (any sequence of four finite numbers) → a `Box` of floats, or `VrprobeError` naming `where`."""
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise VrprobeError(f"{where}: a box must be four numbers [x, y, w, h], got {value!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise VrprobeError(f"{where}: a box must be four finite numbers [x, y, w, h], got {value!r}")
    return (x, y, w, h)


def check_box(box: Box, width: float, height: float, where: str) -> Box:
    """One box checked against a `width` × `height` image (see the module docstring); returns it clipped."""
    x, y, w, h = as_box(box, where)
    if w < 0 or h < 0:
        raise BoxSkip("negative box size", f"{where}: box {fmt(box)} has a negative width or height")
    if w == 0 or h == 0:  # exact: a zero read from the file, not a computed value
        raise BoxSkip("zero-area box", f"{where}: box {fmt(box)} has zero area")
    if x < -TOLERANCE or y < -TOLERANCE or x + w > width + TOLERANCE or y + h > height + TOLERANCE:
        raise BoxSkip(
            "box outside the image",
            f"{where}: box {fmt(box)} extends beyond the {fmt((width, height), 'x')} image by more than "
            f"{TOLERANCE:g} px",
        )
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        raise BoxSkip("zero-area box", f"{where}: box {fmt(box)} has zero area inside the image")
    return (x0, y0, x1 - x0, y1 - y0)


def check_boxes(boxes: Iterable[Any], width: Any, height: Any, where: str) -> tuple[Box, ...]:
    """Every box of one sample checked and clipped against its image (see the module docstring).

    Raises `VrprobeError` (the file is malformed: a box is not four finite numbers, or the image size is not two
    positive finite numbers) or `BoxSkip` (the sample's target is unusable: negative size, zero area, outside the
    image). Exact duplicates are kept once, in their first position.
    """
    try:
        w, h = float(width), float(height)
    except (TypeError, ValueError):
        raise VrprobeError(f"{where}: image size must be two numbers, got {width!r} × {height!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise VrprobeError(f"{where}: image size must be positive, got {width!r} × {height!r}")
    checked = [check_box(b, w, h, where) for b in boxes]
    return tuple(dict.fromkeys(checked))


def fmt(values: Sequence[Any], sep: str = ", ") -> str:
    """Numbers as a compact tuple text: `(10, 20.5, 3, 4)` or, with `sep="x"`, `640x480`."""
    text = sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return text if sep == "x" else f"({text})"


@dataclass
class Skips:
    """The samples one load skipped, counted per reason with the first example of each; `report` warns once."""

    source: str
    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, detail: str) -> None:
        """Count one skipped sample under `reason`; `detail` (where and why) is kept for the first of each reason."""
        self.counts[reason] += 1
        self.first.setdefault(reason, detail)

    def add_error(self, error: BoxSkip) -> None:
        self.add(error.reason, str(error))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, kept: int) -> None:
        """One `DataWarning` naming the source, the count per reason and the first example; nothing if none."""
        if not self.counts:
            return
        parts = "; ".join(f"{reason} × {n} (first: {self.first[reason]})" for reason, n in self.counts.most_common())
        warnings.warn(
            f"{self.source}: skipped {self.total} of {self.total + kept} samples: {parts}", DataWarning, stacklevel=3
        )


def note(message: str) -> None:
    """Say once, as a `DataWarning`, that a load left something out (e.g. no scene graphs: no boxes)."""
    warnings.warn(message, DataWarning, stacklevel=3)
