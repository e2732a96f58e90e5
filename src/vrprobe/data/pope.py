"""POPE loader (object hallucination on COCO val2014), with the asked object's boxes from COCO's instances.

SPLIT is POPE's negative-sampling strategy: `random` (default), `popular` or `adversarial`. PATH is either

- a folder holding the original JSON-lines files `coco_pope_{SPLIT}.json` (one `{"question_id", "image", "text",
  "label"}` per line, `image` a COCO file name such as `COCO_val2014_000000310196.jpg`), with the images in PATH,
  `PATH/val2014` or `PATH/images`; or
- the lmms-lab parquet export (a `.parquet` file or a folder of them, see `vrprobe.data.parquet`): columns
  `question_id`, `question`, `answer`, `image`, `image_source` (`COCO_val2014_000000310196`) and `category` (the split;
  rows of other categories are dropped; without the column every row is kept).

Samples are closed-set: `choices` ("yes", "no"), `answers` (label,); `id` = `pope-{SPLIT}-{question_id}`;
`meta["question_type"]` = "existence"; `meta` also holds `benchmark` = "pope" (what `vrprobe.eval` reads to add POPE's
own metrics to `summary.json`), `split`, `object` (the asked object), `image_id` (the COCO id) and lmms-eval's
instruction ("Answer the question using a single word or phrase.").

Boxes come from COCO's `instances_val2014.json` (in PATH, or `PATH/annotations/`; next to a single parquet file): for
a "yes" question, every instance box (crowd boxes included) of the COCO category whose name is the object in "Is there
a X in the image?", in that image; a "no" question gets `()`. Without the instances file boxes are None, said once in a
`DataWarning`. Counted skips (one `DataWarning` per load, `vrprobe.data.boxes.Skips`): a "yes" question whose object is
no COCO category, whose image is not in the instances file or has no instance of the object, or whose box is unusable
(negative size, zero area, outside the image). A question without a label ("label" field, or `answer` column) or with
a label other than yes/no is one `VrprobeError` line naming the file and question.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vrprobe.data.boxes import BoxSkip, Skips, check_boxes, note
from vrprobe.data.parquet import ImageRows, is_parquet_source, open_parquet, parquet_files
from vrprobe.data.sample import Box, Sample
from vrprobe.data.vqa import VQA_INSTRUCTION, read_json
from vrprobe.errors import UsageError, VrprobeError

SPLITS = ("random", "popular", "adversarial")
DEFAULT_SPLIT = "random"
CHOICES = ("yes", "no")
INSTANCES = "instances_val2014.json"
QUESTION = re.compile(r"^\s*is there an? (?P<object>.+?) in the image\s*\??\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class CocoInstances:
    """COCO instance boxes indexed for POPE: image sizes, category ids by name, boxes per (image, category)."""

    path: Path
    sizes: dict[int, tuple[float, float]]
    categories: dict[str, int]
    boxes: dict[tuple[int, int], list[Any]]


def find_instances(root: Path) -> Path | None:
    """`instances_val2014.json` in ROOT or `ROOT/annotations/` (ROOT a file: its folder), or None."""
    folder = root if root.is_dir() else root.parent
    return next((p for p in (folder / INSTANCES, folder / "annotations" / INSTANCES) if p.is_file()), None)


def load_instances(path: Path) -> CocoInstances:
    """Read a COCO instances file (`images`, `annotations`, `categories`), or `VrprobeError` naming what is wrong."""
    data = read_json(path)
    try:
        sizes = {int(im["id"]): (im["width"], im["height"]) for im in data["images"]}
        categories = {str(c["name"]).lower(): int(c["id"]) for c in data["categories"]}
        boxes: dict[tuple[int, int], list[Any]] = defaultdict(list)
        for ann in data["annotations"]:
            boxes[int(ann["image_id"]), int(ann["category_id"])].append(ann["bbox"])
    except (KeyError, TypeError, ValueError):
        raise VrprobeError(
            f"{path}: not a COCO instances file (needs images with id, width, height; categories with id, name; "
            "annotations with image_id, category_id, bbox)"
        ) from None
    return CocoInstances(path, sizes, categories, dict(boxes))


def asked_object(text: str) -> str | None:
    """The object of a POPE question "Is there a X in the image?" (lower case), or None for another wording."""
    match = QUESTION.match(text)
    return match.group("object").strip().lower() if match else None


def coco_image_id(name: str) -> int | None:
    """The COCO image id in `COCO_val2014_000000310196.jpg` (or without the extension), or None."""
    digits = Path(str(name)).stem.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else None


def pope_boxes(coco: CocoInstances, image_id: int | None, obj: str | None, label: str, where: str) -> tuple[Box, ...]:
    """The target of one question: `()` for "no"; for "yes", every instance box of the asked object in the image.

    Raises `BoxSkip` (the loader counts it) when the boxes cannot be found or one is unusable."""
    if label == "no":
        return ()
    if obj is None or obj not in coco.categories:
        raise BoxSkip("asked object is no COCO category", f"{where}: object {obj!r} is not a COCO category name")
    if image_id is None or image_id not in coco.sizes:
        raise BoxSkip("image not in the COCO instances", f"{where}: image {image_id} is not in {coco.path}")
    found = coco.boxes.get((image_id, coco.categories[obj]), [])
    if not found:
        raise BoxSkip("no instance of the asked object", f"{where}: no '{obj}' instance in image {image_id}")
    width, height = coco.sizes[image_id]
    return check_boxes(found, width, height, f"{where} ({coco.path.name}, image {image_id})")


def check_label(value: Any, where: str) -> str:
    """A POPE label, lower case: "yes" or "no"; anything else (absent included) is one `VrprobeError` line."""
    if value is None:
        raise VrprobeError(f"{where}: no label (a POPE question file needs 'label': yes or no on every question)")
    label = str(value).strip().lower()
    if label not in CHOICES:
        raise VrprobeError(f"{where}: label {value!r} is not yes or no")
    return label


def pope_sample(
    *,
    split: str,
    question_id: Any,
    text: str,
    label: str,
    image_id: int | None,
    boxes: tuple[Box, ...] | None,
    image_path: Path | None = None,
    image_fn: Callable[[], Image.Image] | None = None,
) -> Sample:
    """One closed-set yes/no POPE sample (see the module docstring for its fields)."""
    return Sample(
        id=f"pope-{split}-{question_id}",
        question=text.strip(),
        answers=(label,),
        image_path=image_path,
        choices=CHOICES,
        meta={
            "question_type": "existence",
            "benchmark": "pope",
            "split": split,
            "object": asked_object(text),
            "image_id": image_id,
            "instruction": VQA_INSTRUCTION,
        },
        boxes=boxes,
        image_fn=image_fn,
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file as a list of objects (blank lines ignored), or `VrprobeError` naming file and line."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise VrprobeError(f"malformed JSON in {path}: line {n}") from None
        if not isinstance(row, dict):
            raise VrprobeError(f"{path}: line {n} is not a JSON object")
        rows.append(row)
    return rows


def image_file(root: Path, name: str, where: str) -> Path:
    """The COCO image `name` in ROOT, `ROOT/val2014` or `ROOT/images`, or `VrprobeError` naming where it was sought."""
    candidates = [root / name, root / "val2014" / name, root / "images" / name]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise VrprobeError(f"{where}: image file not found: {name} (looked in {root}, {root}/val2014, {root}/images)")
    return found


def load_pope_json(root: Path, split: str, coco: CocoInstances | None, skips: Skips) -> list[Sample]:
    """Samples of `ROOT/coco_pope_{split}.json` (see the module docstring)."""
    path = root / f"coco_pope_{split}.json"
    if not path.is_file():
        found = sorted(f.stem.removeprefix("coco_pope_") for f in root.glob("coco_pope_*.json"))
        raise VrprobeError(f"POPE file missing: {path} (splits found in {root}: {', '.join(found) or 'none'})")
    samples = []
    images: dict[str, Path] = {}
    for n, row in enumerate(read_lines(path), start=1):
        where = f"{path} line {n}"
        try:
            qid, name, text = row["question_id"], str(row["image"]), str(row["text"])
        except KeyError:
            raise VrprobeError(f"{where}: needs question_id, image and text") from None
        label = check_label(row.get("label"), f"{where} (question_id {qid})")
        image_id = coco_image_id(name)
        boxes = None
        if coco is not None:
            try:
                boxes = pope_boxes(coco, image_id, asked_object(text), label, f"{where} (question_id {qid})")
            except BoxSkip as skip:
                skips.add_error(skip)
                continue
        if name not in images:
            images[name] = image_file(root, name, where)
        samples.append(
            pope_sample(
                split=split,
                question_id=qid,
                text=text,
                label=label,
                image_id=image_id,
                boxes=boxes,
                image_path=images[name],
            )
        )
    return samples


def load_pope_parquet(path: Path, split: str, coco: CocoInstances | None, skips: Skips) -> list[Sample]:
    """Samples of the lmms-lab parquet export under PATH, rows of `category` SPLIT (see the module docstring)."""
    try:
        files = parquet_files(path, split)  # files or a folder named after the split, if any
    except VrprobeError:
        files = parquet_files(path)
    ds = open_parquet(files)
    if "answer" not in ds.column_names:
        raise VrprobeError(f"{files[0]}: no 'answer' column (a POPE file needs labels: yes or no on every question)")
    missing = [c for c in ("question", "image") if c not in ds.column_names]
    if missing:
        raise VrprobeError(f"{files[0]}: missing column(s) {', '.join(missing)} for pope")
    table = ImageRows.read(ds, files)
    samples = []
    columns = ("question_id", "question", "answer", "image_source", "category")
    for i, (qid, text, answer, source, category) in enumerate(zip(*map(table.col, columns), strict=True)):
        if category is not None and str(category) != split:
            continue
        f, r = table.locate(i)
        where = table.where(i)
        qid = qid if qid is not None else f"{f.stem}-{r}"
        label = check_label(answer, f"{where} (question_id {qid})")
        if not table.present[i]:
            raise VrprobeError(f"no image bytes in {where} (question_id {qid})")
        image_id = coco_image_id(source) if source else None
        boxes = None
        if coco is not None:
            try:
                boxes = pope_boxes(coco, image_id, asked_object(str(text)), label, f"{where} (question_id {qid})")
            except BoxSkip as skip:
                skips.add_error(skip)
                continue
        samples.append(
            pope_sample(
                split=split,
                question_id=qid,
                text=str(text),
                label=label,
                image_id=image_id,
                boxes=boxes,
                image_fn=table.loader(i),
            )
        )
    if not samples and not skips.total:
        raise VrprobeError(f"no POPE rows of category '{split}' under {path}")
    return samples


def load_pope(root: Path, split: str | None = None) -> list[Sample]:
    """POPE SPLIT from PATH: the JSON-lines files or the lmms-lab parquet export; see the module docstring."""
    root = Path(root)
    split = split or DEFAULT_SPLIT
    if split not in SPLITS:
        raise UsageError(f"unknown POPE split '{split}' (known: {', '.join(SPLITS)})")
    if not root.exists():
        raise VrprobeError(f"dataset path not found: {root}")
    instances = find_instances(root)
    coco = load_instances(instances) if instances is not None else None
    if coco is None:
        note(f"pope:{root}:{split}: no {INSTANCES} in {root} or {root}/annotations, so no target boxes (boxes None)")
    skips = Skips(f"pope:{root}:{split}")
    if root.is_dir() and next(root.glob("coco_pope_*.json"), None) is not None:
        samples = load_pope_json(root, split, coco, skips)
    elif is_parquet_source(root):
        samples = load_pope_parquet(root, split, coco, skips)
    else:
        raise VrprobeError(f"{root}: neither POPE's coco_pope_{split}.json nor parquet files")
    skips.report(len(samples))
    return samples
