"""GQA loader: a local copy in the official layout, with target boxes from the scene graphs.

Layout under ROOT (SPLIT: `val` by default, the largest split that has both answers and scene graphs; `testdev` has
answers but no scene graphs; `train` works too; GQA's `test` and `challenge` questions carry no answers and are
refused):

- `{SPLIT}_balanced_questions.json`: `{question_id: {"imageId", "question", "answer", "fullAnswer", "annotations":
  {"question": {"3:5": object_id, ...}, "answer": {...}, "fullAnswer": {...}}, "types": {"structural", "semantic",
  "detailed"}, ...}}` (the annotations map token ranges of each text to scene-graph object ids).
- `{SPLIT}_sceneGraphs.json` (optional): `{image_id: {"width", "height", "objects": {object_id: {"name", "x", "y",
  "w", "h", "attributes", "relations"}}}}`.
- `images/{image_id}.jpg`.

Samples are open-ended (`choices` None), scored by exact match as GQA's official evaluation does (case and surrounding
space ignored, `scoring.evaluate.is_correct`); `answers` = (answer,); `id` = `gqa-{SPLIT}-{question_id}`;
`meta["question_type"]` = GQA's structural type (verify, query, choose, logical, compare); `meta` also holds
`semantic_type`, `detailed_type`, `image_id`, `full_answer`, `target_objects` (the annotated object ids), `split`,
`benchmark` = "gqa" and lmms-eval's instruction ("Answer the question using a single word or phrase.").

Boxes: the scene-graph objects that the question's annotations name (question, answer and full answer, each object
once, in order of first mention), checked and clipped by `vrprobe.data.boxes.check_boxes`; `()` when no object is
named. Without a scene-graph file the split loads with `boxes=None` and says so in one `DataWarning`. Counted skips
(one `DataWarning` per load): a question whose image is not in the scene graphs, whose annotated object is missing from
its image's scene graph, or whose box is unusable (negative size, zero area, outside the image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vrprobe.data.boxes import BoxSkip, Skips, check_boxes, note
from vrprobe.data.sample import Box, Sample
from vrprobe.data.vqa import VQA_INSTRUCTION, read_json
from vrprobe.errors import VrprobeError

DEFAULT_SPLIT = "val"
ANNOTATED_TEXTS = ("question", "answer", "fullAnswer")


def annotated_objects(entry: dict[str, Any]) -> tuple[str, ...]:
    """The object ids that a question's `annotations` name (question, answer, full answer), each once, in order.

    A value may hold several ids separated by commas; ids are kept as strings."""
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return ()
    ids: dict[str, None] = {}
    for part in ANNOTATED_TEXTS:
        mapping = annotations.get(part) or {}
        if not isinstance(mapping, dict):
            continue
        for value in mapping.values():
            values = value if isinstance(value, list) else str(value).split(",")
            ids.update((str(v).strip(), None) for v in values if str(v).strip())
    return tuple(ids)


def object_boxes(graph: dict[str, Any], object_ids: tuple[str, ...], where: str) -> tuple[Box, ...]:
    """The boxes of `object_ids` in one image's scene graph, checked against its size.

    Raises `BoxSkip` (counted by the loader) for an object the graph lacks or an unusable box, `VrprobeError` for a
    graph without `width`, `height` or an object without `x`, `y`, `w`, `h`."""
    objects = graph.get("objects") or {}
    raw = []
    for oid in object_ids:
        obj = objects.get(oid)
        if obj is None:
            raise BoxSkip("annotated object missing from the scene graph", f"{where}: no object {oid}")
        try:
            raw.append((obj["x"], obj["y"], obj["w"], obj["h"]))
        except (KeyError, TypeError):
            raise VrprobeError(f"{where}: object {oid} lacks x, y, w or h") from None
    if "width" not in graph or "height" not in graph:
        raise VrprobeError(f"{where}: the scene graph has no width or height")
    return check_boxes(raw, graph["width"], graph["height"], where)


def load_gqa(root: Path, split: str | None = None) -> list[Sample]:
    """GQA (open-ended) with scene-graph target boxes; see the module docstring for layout, samples and skips."""
    root = Path(root)
    split = split or DEFAULT_SPLIT
    if not root.is_dir():
        raise VrprobeError(f"dataset folder not found: {root}")
    questions_file = root / f"{split}_balanced_questions.json"
    if not questions_file.is_file():
        found = sorted(f.name.removesuffix("_balanced_questions.json") for f in root.glob("*_balanced_questions.json"))
        raise VrprobeError(
            f"questions file missing: {questions_file} (splits found in {root}: {', '.join(found) or 'none'})"
        )
    questions = read_json(questions_file)
    if not isinstance(questions, dict):
        raise VrprobeError(f"{questions_file}: expected an object mapping question ids to questions")
    graphs_file = root / f"{split}_sceneGraphs.json"
    graphs: dict[str, Any] | None = None
    if graphs_file.is_file():
        graphs = read_json(graphs_file)
        if not isinstance(graphs, dict):
            raise VrprobeError(f"{graphs_file}: expected an object mapping image ids to scene graphs")
    else:
        note(f"gqa:{root}:{split}: no {graphs_file.name}, so no target boxes (boxes None; GQA's testdev has none)")
    skips = Skips(f"gqa:{root}:{split}")
    images: dict[str, Path] = {}
    samples = []
    for qid, entry in questions.items():
        try:
            image_id, text = str(entry["imageId"]), str(entry["question"])
        except (KeyError, TypeError):
            raise VrprobeError(f"{questions_file}: question {qid} lacks imageId or question") from None
        if "answer" not in entry:
            raise VrprobeError(
                f"{questions_file}: question {qid} has no answer (GQA's test and challenge questions are unlabelled; "
                "use val or testdev)"
            )
        objects = annotated_objects(entry)
        boxes: tuple[Box, ...] | None = None
        if graphs is not None:
            graph = graphs.get(image_id)
            if not isinstance(graph, dict):
                skips.add("image not in the scene graphs", f"{graphs_file}: question {qid}: no image {image_id}")
                continue
            try:
                boxes = object_boxes(graph, objects, f"{graphs_file}: image {image_id}, question {qid}")
            except BoxSkip as skip:
                skips.add_error(skip)
                continue
        if image_id not in images:
            images[image_id] = root / "images" / f"{image_id}.jpg"
            if not images[image_id].is_file():
                raise VrprobeError(f"image file not found: {images[image_id]} (question {qid})")
        types = entry.get("types") if isinstance(entry.get("types"), dict) else {}
        samples.append(
            Sample(
                id=f"gqa-{split}-{qid}",
                question=text,
                answers=(str(entry["answer"]),),
                image_path=images[image_id],
                choices=None,
                meta={
                    "question_type": str(types.get("structural") or "other"),
                    "semantic_type": str(types.get("semantic") or ""),
                    "detailed_type": str(types.get("detailed") or ""),
                    "image_id": image_id,
                    "full_answer": str(entry.get("fullAnswer") or ""),
                    "target_objects": objects,
                    "split": split,
                    "benchmark": "gqa",
                    "instruction": VQA_INSTRUCTION,
                },
                boxes=boxes,
            )
        )
    skips.report(len(samples))
    return samples
