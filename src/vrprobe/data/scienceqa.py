"""ScienceQA loader: a local copy in the official layout (`lupantech/ScienceQA` `data/scienceqa/`).

Layout under ROOT: `problems.json` (`{pid: {"question", "choices": [...], "answer": int, "hint", "image": "image.png"
or null, "subject", "grade", "split", ...}}`), `pid_splits.json` (`{"train": [pid, ...], "val": [...], "test": [...],
...}`) and images at `images/{split}/{pid}/{image}` (`image` is the problem's file name, normally `image.png`).

The prompt follows lmms-eval's `scienceqa_img` task (format "default"): `Sample.question` is

    Context: {hint}        (this line only when the hint is non-empty)
    {question}
    A. {choice 0}
    B. {choice 1}
    ...

and `meta["instruction"]` is "Answer with the option's letter from the given choices directly.", which `Sample.text`
appends on its own line. `choices` are the letters ("A", "B", ...) and `answers` is the correct letter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vrprobe.data.sample import Sample
from vrprobe.data.vqa import read_json
from vrprobe.errors import VrprobeError

SCIENCEQA_INSTRUCTION = "Answer with the option's letter from the given choices directly."
"""lmms-eval's post-prompt for ScienceQA."""


def letters(n: int) -> tuple[str, ...]:
    """The first `n` option letters: "A", "B", ..."""
    return tuple(chr(ord("A") + i) for i in range(n))


def scienceqa_text(question: str, options: Sequence[str], hint: str = "") -> str:
    """The lmms-eval question text: optional `Context: {hint}` line, the question, then one `X. option` line each."""
    context = f"Context: {hint}\n" if hint else ""
    lines = "\n".join(f"{letter}. {option}" for letter, option in zip(letters(len(options)), options, strict=True))
    return f"{context}{question}\n{lines}"


def scienceqa_sample(
    *,
    sample_id: str,
    question: str,
    options: Sequence[str],
    answer: int,
    hint: str,
    subject: str,
    grade: str,
    image_path: Path | None = None,
    image_fn: Callable[[], Image.Image] | None = None,
    where: str = "",
) -> Sample:
    """One multiple-choice sample; `meta["question_type"]` is the subject ("natural science", ...), else "scienceqa".

    Raises `VrprobeError` (mentioning `where`) when `answer` is not an index into `options`.
    """
    options = tuple(str(o) for o in options)
    if not isinstance(answer, int) or not 0 <= answer < len(options):
        raise VrprobeError(f"{where}: answer {answer!r} is not an index into its {len(options)} choices")
    hint = (hint or "").strip()
    choice_letters = letters(len(options))
    return Sample(
        id=sample_id,
        question=scienceqa_text(question, options, hint),
        answers=(choice_letters[answer],),
        image_path=image_path,
        choices=choice_letters,
        meta={
            "question_type": subject or "scienceqa",
            "grade": grade,
            "hint": hint,
            "options": options,
            "instruction": SCIENCEQA_INSTRUCTION,
            "metric": "choice",
        },
        image_fn=image_fn,
    )


def load_scienceqa(root: Path, split: str = "test", images_only: bool = True) -> list[Sample]:
    """The problems of one split, in `pid_splits.json` order; `id` is the problem id (pid).

    `images_only` (default) keeps the problems that have an image (the ScienceQA-IMG subset); otherwise problems
    without one get `image_path=None`. An image named in `problems.json` must exist on disk (checked here).
    """
    root = Path(root)
    if not root.is_dir():
        raise VrprobeError(f"dataset folder not found: {root}")
    problems_file, splits_file = root / "problems.json", root / "pid_splits.json"
    problems = read_json(problems_file)
    splits = read_json(splits_file)
    if not isinstance(problems, dict):
        raise VrprobeError(f"{problems_file}: expected an object mapping problem ids to problems")
    if not isinstance(splits, dict):
        raise VrprobeError(f"{splits_file}: expected an object mapping split names to problem ids")
    if split not in splits:
        raise VrprobeError(f"{splits_file} has splits {', '.join(sorted(splits))}; got '{split}'")
    samples = []
    for pid in splits[split]:
        pid = str(pid)
        p: Any = problems.get(pid)
        if not isinstance(p, dict):
            raise VrprobeError(f"{problems_file}: problem '{pid}' of split '{split}' is missing")
        image_name = p.get("image")
        if not image_name and images_only:
            continue
        image_path = None
        if image_name:
            image_path = root / "images" / split / pid / str(image_name)
            if not image_path.is_file():
                raise VrprobeError(f"image file not found: {image_path} (problem '{pid}')")
        try:
            question, options, answer = str(p["question"]), list(p["choices"]), p["answer"]
        except (KeyError, TypeError):
            raise VrprobeError(f"{problems_file}: problem '{pid}' lacks question, choices or answer") from None
        samples.append(
            scienceqa_sample(
                sample_id=pid,
                question=question,
                options=options,
                answer=answer,
                hint=str(p.get("hint") or ""),
                subject=str(p.get("subject") or ""),
                grade=str(p.get("grade") or ""),
                image_path=image_path,
                where=f"{problems_file}: problem '{pid}'",
            )
        )
    return samples
