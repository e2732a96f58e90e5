"""VQA v2 and OK-VQA loaders: a local copy in the official JSON layout (COCO images).

Layout under ROOT (SPLIT e.g. `val2014`):

- VQA v2: `v2_OpenEnded_mscoco_{SPLIT}_questions.json` (`{"questions": [{"image_id", "question", "question_id"}]}`)
  and `v2_mscoco_{SPLIT}_annotations.json` (`{"annotations": [{"question_id", "image_id", "answers": [{"answer",
  "answer_confidence", "answer_id"} × 10], "multiple_choice_answer", "answer_type", "question_type"}]}`).
- OK-VQA: the same two files named `OpenEnded_mscoco_{SPLIT}_questions.json` and `mscoco_{SPLIT}_annotations.json`.
- Images: `{SPLIT}/COCO_{SPLIT}_{image_id:012d}.jpg`, or flat `COCO_{SPLIT}_{image_id:012d}.jpg` directly in ROOT.

Every question must have an annotation and an image file; both are checked at load time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vrprobe.data.sample import Sample
from vrprobe.errors import VrprobeError

VQA_INSTRUCTION = "Answer the question using a single word or phrase."
"""lmms-eval's post-prompt for VQA v2 and OK-VQA."""


def read_json(path: Path) -> Any:
    """Parse a JSON file, or raise `VrprobeError` naming it (missing or malformed)."""
    if not path.is_file():
        raise VrprobeError(f"dataset file missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise VrprobeError(f"malformed JSON in {path}: line {exc.lineno}") from None
    except UnicodeDecodeError:
        raise VrprobeError(f"malformed JSON in {path}: not UTF-8 text") from None


def coco_image_path(root: Path, split: str, image_id: int) -> Path:
    """The COCO image for `image_id`: `ROOT/SPLIT/COCO_SPLIT_ID.jpg` if present, else the flat `ROOT/COCO_SPLIT_ID.jpg`.

    Raises `VrprobeError` naming the expected file when neither exists.
    """
    name = f"COCO_{split}_{image_id:012d}.jpg"
    for candidate in (root / split / name, root / name):
        if candidate.is_file():
            return candidate
    raise VrprobeError(f"image file not found: {root / split / name} (nor {root / name})")


def most_common_answer(answers: Sequence[str]) -> str:
    """The most frequent answer (ties: the one seen first), VQA's definition of `multiple_choice_answer`; "" if none."""
    counts = Counter(answers)
    return max(counts, key=counts.__getitem__) if counts else ""


def vqa_sample(
    *,
    question_id: Any,
    question: str,
    answers: tuple[str, ...],
    answer_type: str,
    vqa_question_type: str,
    multiple_choice_answer: str,
    image_id: Any,
    image_path: Path | None = None,
    image_fn: Callable[[], Image.Image] | None = None,
) -> Sample:
    """One open-ended VQA sample; `meta["question_type"]` is the answer type ("yes/no", "number", "other").

    `meta`: `vqa_question_type` (VQA's question prefix type, e.g. "what color is"), `multiple_choice_answer`,
    `image_id`, `instruction` (lmms-eval's post-prompt) and `metric` = "vqa" (scored with `answers.vqa_accuracy`).
    """
    return Sample(
        id=str(question_id),
        question=question,
        answers=answers,
        image_path=image_path,
        choices=None,
        meta={
            "question_type": answer_type or "other",
            "vqa_question_type": vqa_question_type,
            "multiple_choice_answer": multiple_choice_answer,
            "image_id": image_id,
            "instruction": VQA_INSTRUCTION,
            "metric": "vqa",
        },
        image_fn=image_fn,
    )


def load_vqa_files(root: Path, split: str, prefix: str) -> list[Sample]:
    """Samples of `{prefix}OpenEnded_mscoco_{split}_questions.json` + `{prefix}mscoco_{split}_annotations.json`.

    A split without a questions file raises `VrprobeError` naming the file and listing the splits that do exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise VrprobeError(f"dataset folder not found: {root}")
    questions_file = root / f"{prefix}OpenEnded_mscoco_{split}_questions.json"
    annotations_file = root / f"{prefix}mscoco_{split}_annotations.json"
    if not questions_file.is_file():
        head, tail = f"{prefix}OpenEnded_mscoco_", "_questions.json"
        found = sorted(f.name[len(head) : -len(tail)] for f in root.glob(f"{head}*{tail}"))
        raise VrprobeError(
            f"questions file missing: {questions_file} (splits found in {root}: {', '.join(found) or 'none'})"
        )
    questions = read_json(questions_file)
    annotations = read_json(annotations_file)
    if not isinstance(questions, dict) or not isinstance(questions.get("questions"), list):
        raise VrprobeError(f"{questions_file}: expected an object with a 'questions' list")
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise VrprobeError(f"{annotations_file}: expected an object with an 'annotations' list")
    try:
        by_qid = {a["question_id"]: a for a in annotations["annotations"]}
    except (KeyError, TypeError):
        raise VrprobeError(f"{annotations_file}: an annotation has no question_id") from None
    samples = []
    for i, q in enumerate(questions["questions"]):
        try:
            qid, image_id, text = q["question_id"], int(q["image_id"]), str(q["question"])
        except (KeyError, TypeError, ValueError):
            raise VrprobeError(f"{questions_file}: question {i} lacks question_id, image_id or question") from None
        ann = by_qid.get(qid)
        if ann is None:
            raise VrprobeError(f"{annotations_file}: no annotation for question_id {qid}")
        try:
            answers = tuple(str(a["answer"]) for a in ann["answers"])
        except (KeyError, TypeError):
            raise VrprobeError(f"{annotations_file}: question_id {qid} has malformed 'answers'") from None
        samples.append(
            vqa_sample(
                question_id=qid,
                question=text,
                answers=answers,
                answer_type=str(ann.get("answer_type", "other")),
                vqa_question_type=str(ann.get("question_type", "")),
                multiple_choice_answer=str(ann.get("multiple_choice_answer") or most_common_answer(answers)),
                image_id=image_id,
                image_path=coco_image_path(root, split, image_id),
            )
        )
    return samples


def load_vqav2(root: Path, split: str = "val2014") -> list[Sample]:
    """VQA v2 (open-ended): one sample per question, `answers` = the ten raw human answers, `id` = the question id."""
    return load_vqa_files(Path(root), split, "v2_")


def load_okvqa(root: Path, split: str = "val2014") -> list[Sample]:
    """OK-VQA (open-ended, outside knowledge): same layout and sample shape as VQA v2, file names without `v2_`."""
    return load_vqa_files(Path(root), split, "")
