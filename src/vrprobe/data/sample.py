"""`Sample`: one image-question item, the unit every loader yields and every analysis consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vrprobe.errors import VrprobeError

#: a target box `(x, y, w, h)` in original-image pixels
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One item: an image, a question, its reference answers and (closed set) the candidate answers.

    `image` is loaded lazily through `load_image()` so a dataset of thousands costs nothing until used.
    `answers`: reference answers (easy-VQA: one; VQA v2: ten human answers).
    `choices`: the candidate set for closed-set scoring, or None for open-ended generation.
    `meta`: free-form metadata; `meta["question_type"]` is always set (easy-VQA: "yes/no", "color", "shape").
    `boxes`: the target, the image region(s) the answer depends on, as `(x, y, w, h)` boxes in original-image pixels
    (x, y the top-left corner; w, h > 0). None when the dataset has no boxes; an empty tuple when it has them but this
    sample has no target (a POPE "no" question). Grounded metrics exist only for samples with at least one box.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    image_path: Path | None = None
    choices: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    boxes: tuple[Box, ...] | None = None
    image_fn: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """What the model is asked: the question, then the benchmark's instruction (`meta["instruction"]`, e.g.
        lmms-eval's "Answer the question using a single word or phrase.") on its own line when there is one."""
        instruction = self.meta.get("instruction")
        return f"{self.question}\n{instruction}" if instruction else self.question

    @property
    def gold(self) -> str | None:
        """The single target answer: VQA's `multiple_choice_answer` when given, else the first reference answer."""
        return self.meta.get("multiple_choice_answer") or (self.answers[0] if self.answers else None)

    @property
    def question_type(self) -> str:
        return str(self.meta.get("question_type", "other"))

    def load_image(self) -> Image.Image:
        """Open the image as RGB; a missing or unreadable file raises one clear `VrprobeError` naming it."""
        if self.image_fn is not None:
            return self.image_fn()
        if self.image_path is None:
            raise VrprobeError(f"sample {self.id} has no image")
        return load_rgb(self.image_path)


def load_rgb(path: Path) -> Image.Image:
    """Read an image file fully into memory as RGB, or raise `VrprobeError` naming the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise VrprobeError(f"image file not found: {path}") from None
    except Exception as exc:  # PIL raises several types for corrupt files
        raise VrprobeError(f"cannot read image file {path}: {type(exc).__name__}") from None
