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


# --- GQA and POPE (official layouts) and COCO instances, with target boxes -------------------------------------------

BAD_BOXES = ("negative", "outside", "zero", "missing")
"""What `write_gqa` / `write_pope` break in the first item's target: a negative width, a box beyond the image, a zero
width, or the annotated object (GQA) / the asked object's instances (POPE) removed."""

POPE_CATEGORIES = ({"id": 1, "name": "person"}, {"id": 2, "name": "circle"}, {"id": 3, "name": "rectangle"})
POPE_CATEGORIES += ({"id": 4, "name": "triangle"},)


@cache
def shape_box(image_id: int) -> tuple[int, int, int, int]:
    """The tight box `(x, y, w, h)` of the one shape in an easy-VQA test image: pixels that differ from the corner."""
    import numpy as np

    with Image.open(image_path(image_id)) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.int64)
    ys, xs = np.nonzero(np.abs(a - a[0, 0]).sum(-1) > 0)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def break_box(box: dict, bad: str | None) -> None:
    """Corrupt a dict with keys x, y, w, h in place as `bad` says (see `BAD_BOXES`; "missing" is the caller's)."""
    if bad == "negative":
        box["w"] = -5
    elif bad == "outside":
        box["x"] = 70
    elif bad == "zero":
        box["w"] = 0


def gqa_image_id(image_id: int) -> str:
    return f"23{image_id:05d}"


def gqa_entry(k: int, gid: str, color: str, shape: str) -> dict:
    """One GQA question on image `gid` (object ids `{gid}1` the shape, `{gid}2` the floor), of kind k % 4."""
    obj, floor = f"{gid}1", f"{gid}2"
    kind = k % 4
    if kind == 0:
        text, answer, full = f"What color is the {shape}?", color, f"The {shape} is {color}."
        ann = {"question": {"3": obj}, "answer": {}, "fullAnswer": {"1": obj}}
        types = {"structural": "query", "semantic": "attr", "detailed": "color"}
    elif kind == 1:
        text, answer, full = f"Is there a {shape} on the floor?", "yes", f"Yes, there is a {shape} on the floor."
        ann = {"question": {"3": obj, "6": floor}, "answer": {}, "fullAnswer": {"4": obj, "7": floor}}
        types = {"structural": "verify", "semantic": "rel", "detailed": "existRelS"}
    elif kind == 2:
        text, answer, full = f"Which shape is {color}?", shape, f"The {color} shape is a {shape}."
        ann = {"question": {"1:3": obj}, "answer": {"0": obj}, "fullAnswer": {"1:3": obj}}
        types = {"structural": "query", "semantic": "cat", "detailed": "categoryThis"}
    else:
        text, answer, full = "Is the background plain or patterned?", "plain", "The background is plain."
        ann = {"question": {}, "answer": {}, "fullAnswer": {}}
        types = {"structural": "choose", "semantic": "global", "detailed": "chooseGlobal"}
    return {
        "imageId": gid,
        "question": text,
        "answer": answer,
        "fullAnswer": full,
        "annotations": ann,
        "types": types,
        "isBalanced": True,
        "entailed": [],
        "equivalent": [],
        "groups": {"global": None, "local": None},
        "semantic": [],
        "semanticStr": "",
    }


def write_gqa(root: Path, n: int = 8, split: str = "val", scene_graphs: bool = True, bad: str | None = None) -> Path:
    """GQA's official layout: `{split}_balanced_questions.json`, `{split}_sceneGraphs.json` (unless `scene_graphs` is
    False, as for testdev) and `images/{imageId}.jpg`, one question per easy-VQA image (kinds cycle: color query on
    the shape; verify shape and floor; category query; a global choose question naming no object).

    Each scene graph (64×64) holds the shape (`{gid}1`, its tight box), the floor (`{gid}2`: x 0, y 48, w 65, h 16,
    one pixel past the right edge: clipped to w 64) and a wall (`{gid}3`, never annotated). Question ids are
    `{1000 + k:08d}` (leading zeros). `bad` (see `BAD_BOXES`) breaks the first question's shape object."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    questions, graphs = {}, {}
    for k, (image_id, color, shape) in enumerate(easy_images()[:n]):
        gid = gqa_image_id(image_id)
        x, y, w, h = shape_box(image_id)
        objects = {
            f"{gid}1": {"name": shape, "x": x, "y": y, "w": w, "h": h, "attributes": [color], "relations": []},
            f"{gid}2": {"name": "floor", "x": 0, "y": 48, "w": 65, "h": 16, "attributes": [], "relations": []},
            f"{gid}3": {"name": "wall", "x": 0, "y": 0, "w": 64, "h": 16, "attributes": [], "relations": []},
        }
        if k == 0 and bad == "missing":
            del objects[f"{gid}1"]
        elif k == 0:
            break_box(objects[f"{gid}1"], bad)
        graphs[gid] = {"width": 64, "height": 64, "location": "", "weather": "", "objects": objects}
        questions[f"{1000 + k:08d}"] = gqa_entry(k, gid, color, shape)
        (root / "images" / f"{gid}.jpg").write_bytes(jpeg_bytes(image_id))
    (root / f"{split}_balanced_questions.json").write_text(json.dumps(questions))
    if scene_graphs:
        (root / f"{split}_sceneGraphs.json").write_text(json.dumps(graphs))
    return root


def pope_rows(n: int, split: str = "random") -> list[dict]:
    """POPE questions on the first `n` easy-VQA images: per image "Is there a {its shape} in the image?" (yes), then
    "Is there a {another shape} in the image?" (no; which other shape depends on the split). Ids count from 1."""
    shapes = ("circle", "rectangle", "triangle")
    offset = {"random": 1, "popular": 2, "adversarial": 1}[split]
    rows = []
    for image_id, _, shape in easy_images()[:n]:
        other = shapes[(shapes.index(shape) + offset) % 3]
        for obj, label in ((shape, "yes"), (other, "no")):
            rows.append(
                {
                    "question_id": len(rows) + 1,
                    "image": coco_name("val2014", image_id),
                    "text": f"Is there a {obj} in the image?",
                    "label": label,
                }
            )
    return rows


def coco_instances(n: int, bad: str | None = None) -> dict:
    """A COCO `instances_val2014.json` for the first `n` easy-VQA images (64×64): each shape's tight box under its
    category (ids in `POPE_CATEGORIES`); the second image also has a second instance [0, 0, 8, 8] of its shape, the
    third a "person" [40, 40, 10, 10]. `bad` (see `BAD_BOXES`) breaks or removes the first image's shape instance."""
    ids = {c["name"]: c["id"] for c in POPE_CATEGORIES}
    images, annotations = [], []
    for k, (image_id, _, shape) in enumerate(easy_images()[:n]):
        images.append({"id": image_id, "width": 64, "height": 64, "file_name": coco_name("val2014", image_id)})
        boxes = [(shape, [float(v) for v in shape_box(image_id)])]
        if k == 1:
            boxes.append((shape, [0.0, 0.0, 8.0, 8.0]))
        if k == 2:
            boxes.append(("person", [40.0, 40.0, 10.0, 10.0]))
        for j, (name, bbox) in enumerate(boxes):
            if k == 0 and j == 0 and bad == "missing":
                continue
            if k == 0 and j == 0:
                box = dict(zip("xywh", bbox, strict=True))
                break_box(box, bad)
                bbox = [box[c] for c in "xywh"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": ids[name],
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    categories = [{**c, "supercategory": "shape"} for c in POPE_CATEGORIES]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_pope(
    root: Path,
    n: int = 6,
    split: str = "random",
    images: str = "val2014",
    instances: str | None = "annotations",
    labels: bool = True,
    bad: str | None = None,
) -> Path:
    """POPE's original layout: `coco_pope_{split}.json` (JSON lines, 2 questions per image, see `pope_rows`), the
    COCO-named JPEGs in `root/{images}` ("" = root itself), and `instances_val2014.json` in `root/{instances}`
    ("" = root itself; None: no instances file). `labels=False` drops every "label"; `bad` breaks the first box."""
    root = Path(root)
    image_dir = root / images
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = pope_rows(n, split)
    if not labels:
        rows = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    (root / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for image_id, _, _ in easy_images()[:n]:
        (image_dir / coco_name("val2014", image_id)).write_bytes(jpeg_bytes(image_id))
    if instances is not None:
        (root / instances).mkdir(parents=True, exist_ok=True)
        (root / instances / "instances_val2014.json").write_text(json.dumps(coco_instances(n, bad)))
    return root


def write_pope_parquet(root: Path, n: int = 6, instances: bool = True, labels: bool = True) -> Path:
    """The lmms-lab POPE export: `root/data/test-0000k-of-00002.parquet` with columns `id`, `question_id` (string),
    `question`, `answer`, `image_source`, `image` and `category`, the three splits' rows (`pope_rows`) one after the
    other; `instances_val2014.json` in `root` unless `instances` is False; `labels=False` drops the `answer` column."""
    import datasets

    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    rows = []
    for split in ("adversarial", "popular", "random"):
        for r in pope_rows(n, split):
            image_id = int(r["image"][-16:-4])
            row = {
                "id": str(len(rows)),
                "question_id": str(r["question_id"]),
                "question": r["text"],
                "answer": r["label"],
                "image_source": r["image"].removesuffix(".jpg"),
                "image": {"bytes": jpeg_bytes(image_id), "path": None},
                "category": split,
            }
            if not labels:
                del row["answer"]
            rows.append(row)
    half = (len(rows) + 1) // 2
    for part, chunk in enumerate((rows[:half], rows[half:])):
        target = root / "data" / f"test-{part:05d}-of-00002.parquet"
        datasets.Dataset.from_list(chunk).cast_column("image", datasets.Image()).to_parquet(str(target))
    if instances:
        (root / "instances_val2014.json").write_text(json.dumps(coco_instances(n)))
    return root
