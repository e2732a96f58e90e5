"""Image shifts for a distribution-shifted split, applied lazily and seeded per sample.

- `noise=S`: add Gaussian noise of standard deviation S in [0, 1] (pixel values scaled to [0, 1]) to every pixel,
  then clip.
- `occlude=F`: paint a mid-grey square covering a fraction F in [0, 1] of the image area at a uniformly random
  position.
Each option at most once; anything else in the query is refused with a `UsageError`.
The random draws for a sample depend only on (seed, sample id), so a shifted split is identical across runs and models.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image

from vrprobe.data.sample import Sample
from vrprobe.errors import UsageError

SHIFTS = {"noise": (0.0, 1.0), "occlude": (0.0, 1.0)}


def parse_shifts(query: str) -> dict[str, float]:
    """'noise=0.3&occlude=0.25' → {"noise": 0.3, "occlude": 0.25}, validated."""
    out: dict[str, float] = {}
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if key not in SHIFTS or not sep:
            raise UsageError(f"unknown dataset option '{part}' (known: noise=STD, occlude=FRACTION)")
        if key in out:
            raise UsageError(f"dataset option {key} is given more than once")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"dataset option {key} needs a number, got '{value}'") from None
        lo, hi = SHIFTS[key]
        if not lo <= number <= hi:
            raise UsageError(f"dataset option {key}={value} is outside [{lo:g}, {hi:g}]")
        out[key] = number
    return out


def apply_shifts(image: Image.Image, shifts: dict[str, float], rng: np.random.Generator) -> Image.Image:
    """The shifted copy of one RGB image (occlusion first, then noise)."""
    arr = np.asarray(image, dtype=np.float64) / 255.0
    h, w = arr.shape[:2]
    if shifts.get("occlude", 0) > 0:
        side = max(1, round(float(np.sqrt(shifts["occlude"] * h * w))))
        side = min(side, h, w)
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        arr[top : top + side, left : left + side] = 0.5
    if shifts.get("noise", 0) > 0:
        arr = arr + rng.normal(0.0, shifts["noise"], size=arr.shape)
    return Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8), "RGB")


def shift_images(samples: list[Sample], shifts: dict[str, float], seed: int = 0) -> list[Sample]:
    """Samples whose images are shifted on load, with a generator seeded by (seed, crc32(sample id))."""

    def loader(s: Sample) -> Callable[[], Image.Image]:
        def load() -> Image.Image:
            rng = np.random.default_rng([seed, zlib.crc32(s.id.encode())])
            return apply_shifts(s.load_image(), shifts, rng)

        return load

    return [replace(s, image_fn=loader(s), meta={**s.meta, "shift": dict(shifts)}) for s in samples]
