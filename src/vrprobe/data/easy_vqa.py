"""easy-VQA loader: the `easy-vqa` package's images and questions, or a local copy in the same layout.

Layout (the package's own `easy_vqa/data/`): `answers.txt`, `{split}/questions.json` (a list of
`[question, answer, image_id]`), `{split}/images/{image_id}.png`.

Target boxes come from the pixels (`shape_box`): every question of an image is about its one shape, so every sample's
target is the shape's tight box, computed once per image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vrprobe.data.sample import Box, Sample, load_rgb
from vrprobe.errors import VrprobeError

SPLITS = ("train", "test")
TOLERANCE = 16
"""A pixel belongs to the shape when one of its channels differs from the background's by more than this (of 255)."""


def package_root() -> Path:
    """The data folder shipped inside the `easy-vqa` package."""
    import easy_vqa

    return Path(easy_vqa.__file__).parent / "data"


def question_type(question: str, answer: str) -> str:
    """easy-VQA question type from the answer: "yes/no", "shape" or "color"."""
    if answer in ("yes", "no"):
        return "yes/no"
    if answer in ("circle", "rectangle", "triangle"):
        return "shape"
    return "color"


def shape_box(path: Path) -> Box | None:
    """The tight box `(x, y, w, h)` of the one shape in an easy-VQA image, from its pixels; None if it has none.

    Background = the most common colour on the image's border (easy-VQA paints a plain pale background and a shape
    that may touch the border but never covers most of it). Shape pixels = those with some channel differing from
    the background by more than `TOLERANCE` (16 of 255): the solid shape and the antialiased rim pixels mixed more
    than 16/C toward it (C the colour's largest channel contrast with the background: 6–14% for easy-VQA's colours);
    the fainter fringe left out lies within 1 px of the box (checked on all 5,000 images). The box spans the first
    to the last shape pixel in each direction, in whole pixels: `w = x_last - x_first + 1`. A missing or unreadable
    image raises `VrprobeError` naming the file.
    """
    a = np.asarray(load_rgb(path))
    corners = a[[0, 0, -1, -1], [0, -1, 0, -1]]
    if (corners == corners[0]).all():  # four equal corners are the background: one shape cannot cover all four
        bg = corners[0].astype(np.int16)
    else:
        border = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
        colours, counts = np.unique(border, axis=0, return_counts=True)
        bg = colours[counts.argmax()].astype(np.int16)
    differs = np.abs(a.astype(np.int16) - bg) > TOLERANCE  # [H, W, 3]; reduced channels last (numpy is slow at that)
    rows = np.flatnonzero(differs.reshape(len(a), -1).any(axis=1))
    cols = np.flatnonzero(differs.any(axis=0).any(axis=1))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))


def load_easy_vqa(split: str, root: Path | None = None) -> list[Sample]:
    """All samples of one split, in file order; ids are `"{split}-{row}"`.

    Choices are the dataset's full answer list (13 answers), so a model may answer "yes" to a color question and be
    wrong, as in any closed-set VQA classifier. `boxes` = the shape's tight box (`shape_box`, read once per image,
    so loading reads every image of the split: ~0.3 s for test's 1,000); None for an image with no shape pixels. A
    missing or unreadable image raises `VrprobeError` naming it.
    """
    if split not in SPLITS:
        raise VrprobeError(f"easy-vqa has splits {', '.join(SPLITS)}; got '{split}'")
    root = package_root() if root is None else Path(root)
    answers_file = root / "answers.txt"
    questions_file = root / split / "questions.json"
    for f in (answers_file, questions_file):
        if not f.is_file():
            raise VrprobeError(f"easy-vqa file missing: {f}")
    choices = tuple(line.strip() for line in answers_file.read_text().splitlines() if line.strip())
    try:
        rows = json.loads(questions_file.read_text())
    except json.JSONDecodeError as exc:
        raise VrprobeError(f"malformed JSON in {questions_file}: line {exc.lineno}") from None
    image_dir = root / split / "images"
    samples = []
    boxes: dict[Path, Box | None] = {}
    for i, row in enumerate(rows):
        try:
            question, answer, image_id = row
        except (TypeError, ValueError):
            raise VrprobeError(f"{questions_file}: entry {i} is not [question, answer, image_id]") from None
        image_path = image_dir / f"{image_id}.png"
        if image_path not in boxes:
            boxes[image_path] = shape_box(image_path)
        box = boxes[image_path]
        samples.append(
            Sample(
                id=f"{split}-{i}",
                question=str(question),
                answers=(str(answer),),
                image_path=image_path,
                choices=choices,
                meta={"question_type": question_type(question, answer), "image_id": int(image_id)},
                boxes=None if box is None else (box,),
            )
        )
    return samples
