"""easy-VQA loader: the `easy-vqa` package's images and questions, or a local copy in the same layout.

Layout (the package's own `easy_vqa/data/`): `answers.txt`, `{split}/questions.json` (a list of
`[question, answer, image_id]`), `{split}/images/{image_id}.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

from vrprobe.data.sample import Sample
from vrprobe.errors import VrprobeError

SPLITS = ("train", "test")


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


def load_easy_vqa(split: str, root: Path | None = None) -> list[Sample]:
    """All samples of one split, in file order; ids are `"{split}-{row}"`.

    Choices are the dataset's full answer list (13 answers), so a model may answer "yes" to a color question and be
    wrong, as in any closed-set VQA classifier.
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
    for i, row in enumerate(rows):
        try:
            question, answer, image_id = row
        except (TypeError, ValueError):
            raise VrprobeError(f"{questions_file}: entry {i} is not [question, answer, image_id]") from None
        samples.append(
            Sample(
                id=f"{split}-{i}",
                question=str(question),
                answers=(str(answer),),
                image_path=image_dir / f"{image_id}.png",
                choices=choices,
                meta={"question_type": question_type(question, answer), "image_id": int(image_id)},
            )
        )
    return samples
