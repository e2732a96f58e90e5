"""Writers of small on-disk benchmark copies (VQA v2, OK-VQA, ScienceQA, lmms-lab-style parquet) for tests.

Every item uses one easy-VQA test image (one shape on a plain background) whose true color and shape come from the
easy-VQA questions. `fixture_items(n)` is the content; each `write_*` lays it out in one benchmark's format and
returns the path to put in a spec, e.g. `load_dataset(f"vqav2:{write_vqav2(tmp_path)}")`.

VQA items cycle through four questions: "What color is the shape?" and "What shape is in the image?" (answer type
"other"), "Is there a {color} shape?" ("yes/no") and "How many shapes are there?" ("number"). Their ten human answers
hold the true answer 4–8 times plus fixed distractors, so VQA accuracy and `multiple_choice_answer` are known.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from vrprobe.data.easy_vqa import package_root, question_type

DISTRACTORS = ("blue", "the shape", "Two", "dont know", "red.", "none", "circle", "yes")
COLORS = ("red", "green", "blue", "yellow")


@dataclass(frozen=True)
class Item:
    """One fixture question: `image_id` is the easy-VQA test image id (and the fake COCO image id)."""

    image_id: int
    question: str
    answers: tuple[str, ...]
    answer_type: str
    question_type: str
    color: str
    shape: str


@cache
def easy_images() -> tuple[tuple[int, str, str], ...]:
    """(image id, color, shape) of the easy-VQA test images whose color and shape are both asked about."""
    rows = json.loads((package_root() / "test" / "questions.json").read_text())
    color: dict[int, str] = {}
    shape: dict[int, str] = {}
    for q, a, i in rows:
        kind = question_type(q, a)
        if kind == "color":
            color.setdefault(i, a)
        elif kind == "shape":
            shape.setdefault(i, a)
    return tuple((i, color[i], shape[i]) for i in sorted(color) if i in shape)


def fixture_items(n: int = 12) -> list[Item]:
    """The first `n` fixture questions (deterministic)."""
    items = []
    for k, (image_id, color, shape) in enumerate(easy_images()[:n]):
        kind = k % 4
        if kind == 0:
            question, truth, answer_type, qtype = "What color is the shape?", color, "other", "what color is the"
        elif kind == 1:
            question, truth, answer_type, qtype = "What shape is in the image?", shape, "other", "what"
        elif kind == 2:
            question, truth, answer_type, qtype = f"Is there a {color} shape?", "yes", "yes/no", "is there a"
        else:
            question, truth, answer_type, qtype = "How many shapes are there?", "1", "number", "how many"
        hits = 4 + k % 5
        answers = (truth,) * hits + DISTRACTORS[: 10 - hits]
        items.append(Item(image_id, question, answers, answer_type, qtype, color, shape))
    return items


def image_path(image_id: int) -> Path:
    """The easy-VQA test PNG of `image_id`."""
    return package_root() / "test" / "images" / f"{image_id}.png"


def jpeg_bytes(image_id: int) -> bytes:
    """The easy-VQA PNG re-encoded as JPEG (deterministic), as a COCO image would be stored."""
    buf = io.BytesIO()
    with Image.open(image_path(image_id)) as im:
        im.convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png_bytes(image_id: int) -> bytes:
    return image_path(image_id).read_bytes()


def coco_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def write_vqa_json(root: Path, n: int, split: str, prefix: str, flat: bool = False) -> Path:
    """VQA-style questions + annotations JSON and COCO-named JPEGs under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    image_dir = root if flat else root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for k, it in enumerate(fixture_items(n)):
        qid = it.image_id * 1000 + k
        questions.append({"image_id": it.image_id, "question": it.question, "question_id": qid})
        annotations.append(
            {
                "question_id": qid,
                "image_id": it.image_id,
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(it.answers)
                ],
                "multiple_choice_answer": it.answers[0],
                "answer_type": it.answer_type,
                "question_type": it.question_type,
            }
        )
        (image_dir / coco_name(split, it.image_id)).write_bytes(jpeg_bytes(it.image_id))
    (root / f"{prefix}OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps({"questions": questions}))
    (root / f"{prefix}mscoco_{split}_annotations.json").write_text(json.dumps({"annotations": annotations}))
    return root


def write_vqav2(root: Path, n: int = 12, split: str = "val2014", flat: bool = False) -> Path:
    """A VQA v2 copy (`v2_OpenEnded_mscoco_*` files); images in `root/split/` or, with `flat`, in `root`."""
    return write_vqa_json(Path(root), n, split, "v2_", flat)


def write_okvqa(root: Path, n: int = 12, split: str = "val2014") -> Path:
    """An OK-VQA copy (`OpenEnded_mscoco_*` files, images in `root/split/`)."""
    return write_vqa_json(Path(root), n, split, "")


def science_problems(n: int) -> list[dict]:
    """`n` image problems ("Which color is the shape?", 2–4 choices) followed by `n // 3` text-only problems."""
    problems = []
    for k, it in enumerate(fixture_items(n)):
        n_choices = 2 + k % 3
        others = [c for c in COLORS if c != it.color][: n_choices - 1]
        answer = k % n_choices
        choices = [*others[:answer], it.color, *others[answer:]]
        problems.append(
            {
                "question": "Which color is the shape?",
                "choices": choices,
                "answer": answer,
                "hint": "The picture shows one shape." if k % 2 else "",
                "image": "image.png",
                "subject": ("natural science", "social science")[k % 2],
                "grade": f"grade{3 + k % 4}",
                "image_id": it.image_id,
            }
        )
    for _ in range(n // 3):
        problems.append(
            {
                "question": "Which word is a noun?",
                "choices": ["run", "table"],
                "answer": 1,
                "hint": "",
                "image": None,
                "subject": "language science",
                "grade": "grade2",
                "image_id": None,
            }
        )
    return problems


def write_scienceqa(root: Path, n: int = 12, split: str = "test") -> Path:
    """A ScienceQA copy: `problems.json`, `pid_splits.json` (SPLIT plus a small "train"), `images/SPLIT/PID/image.png`.

    Pids are "1", "2", …; the text-only problems (without image) sit between the image ones in the split list.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    problems, order = {}, []
    for pid, p in enumerate(science_problems(n), start=1):
        image_id = p.pop("image_id")
        problems[str(pid)] = {**p, "split": split, "lecture": "", "solution": ""}
        order.append(str(pid))
        if image_id is not None:
            (root / "images" / split / str(pid)).mkdir(parents=True, exist_ok=True)
            (root / "images" / split / str(pid) / "image.png").write_bytes(png_bytes(image_id))
    problems["9001"] = {**problems["1"], "image": None, "split": "train"}
    order = order[:1] + order[n:] + order[1:n]  # text-only problems early, to check they are skipped
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({split: order, "train": ["9001"]}))
    return root


def write_parquet(root: Path, kind: str, n: int = 12, split: str | None = None) -> Path:
    """lmms-lab-like parquet export of `kind` (vqav2, okvqa, scienceqa) in two files `SPLIT-0000k-of-00002.parquet`.

    VQA v2 answers are dicts (`answer`, `answer_confidence`, `answer_id`), OK-VQA answers plain strings; VQA v2 and
    ScienceQA are written with `datasets` (an `Image` feature in the schema metadata), OK-VQA with bare pyarrow.
    Default SPLIT: "validation" (vqav2), "val2014" (okvqa), "test" (scienceqa). Returns `root`.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    split = split or {"vqav2": "validation", "okvqa": "val2014", "scienceqa": "test"}[kind]
    if kind == "scienceqa":
        rows = []
        for p in science_problems(n):
            image_id = p.pop("image_id")
            image = None if image_id is None else {"bytes": png_bytes(image_id), "path": None}
            rows.append({**p, "image": image})
        rows = rows[:1] + rows[n:] + rows[1:n]  # same order as write_scienceqa's split list
        features = datasets.Features(
            {
                "question": datasets.Value("string"),
                "choices": datasets.List(datasets.Value("string")),
                "answer": datasets.Value("int8"),
                "hint": datasets.Value("string"),
                "image": datasets.Image(),
                "subject": datasets.Value("string"),
                "grade": datasets.Value("string"),
            }
        )
    else:
        rows = []
        for k, it in enumerate(fixture_items(n)):
            answers = (
                [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(it.answers)]
                if kind == "vqav2"
                else list(it.answers)
            )
            rows.append(
                {
                    "question_id": it.image_id * 1000 + k,
                    "question": it.question,
                    "answers": answers,
                    "image_id": it.image_id,
                    "answer_type": it.answer_type,
                    "question_type": it.question_type,
                    "multiple_choice_answer": it.answers[0],
                    "image": {"bytes": jpeg_bytes(it.image_id), "path": None},
                }
            )
        features = None
    half = (len(rows) + 1) // 2
    for part, chunk in enumerate((rows[:half], rows[half:])):
        target = root / f"{split}-{part:05d}-of-00002.parquet"
        if features is None and kind == "okvqa":
            pq.write_table(pa.Table.from_pylist(chunk), target)
        elif features is None:
            datasets.Dataset.from_list(chunk).cast_column("image", datasets.Image()).to_parquet(str(target))
        else:
            datasets.Dataset.from_list(chunk, features=features).to_parquet(str(target))
    return root
