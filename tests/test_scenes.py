"""The `scenes` benchmark (determinism, exact boxes, answers, lures, spec) and easy-VQA's pixel-derived boxes."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vrprobe import api
from vrprobe.data import load_dataset
from vrprobe.data.easy_vqa import TOLERANCE, load_easy_vqa, package_root
from vrprobe.data.scenes import COLORS, load_scenes
from vrprobe.errors import UsageError, VrprobeError

SHAPES = ("circle", "rectangle", "triangle")


@pytest.fixture(scope="module")
def splits():
    return {split: load_scenes(split) for split in ("train", "test", "lures")}


def one_per_scene(samples):
    return list({s.meta["image_id"]: s for s in samples}.values())


def pixels(sample) -> np.ndarray:
    return np.asarray(sample.load_image())


# ---- determinism --------------------------------------------------------------------------------------------------


def facts(samples):
    return [(s.id, s.question, s.answers, s.choices, s.boxes, s.meta) for s in samples]


def test_same_split_same_questions_and_bytes_other_split_differs(splits):
    again = load_scenes("test")
    assert facts(again) == facts(splits["test"])
    assert facts(load_dataset("scenes:test").samples) == facts(splits["test"])
    for a, b in zip(one_per_scene(again)[:40], one_per_scene(splits["test"])[:40], strict=True):
        assert a.load_image().tobytes() == b.load_image().tobytes()
        assert a.load_image().tobytes() == a.load_image().tobytes()
    layouts = {
        split: {json.dumps(s.meta["objects"], sort_keys=True) for s in samples} for split, samples in splits.items()
    }
    assert not layouts["test"] & layouts["train"] and not layouts["lures"] & layouts["test"]  # a seed per split
    assert pixels(splits["test"][0]).tobytes() != pixels(splits["train"][0]).tobytes()
    assert [s.id for s in splits["test"][:2]] == ["scenes-test-000000", "scenes-test-000001"]


def test_sizes_kinds_and_answer_balance(splits):
    sizes = {split: len(samples) for split, samples in splits.items()}
    assert sizes == {"train": 20_000, "test": 2_000, "lures": 2_000}
    for split, samples in splits.items():
        kinds = Counter(s.question_type for s in samples)
        assert kinds == {k: sizes[split] // 4 for k in ("attribute", "existence", "count", "spatial")}
        yes_no = Counter(s.answers[0] for s in samples if s.question_type == "existence")
        assert yes_no["yes"] == yes_no["no"]
        counts = Counter(s.answers[0] for s in samples if s.question_type == "count")
        top = 6 if split != "lures" else 5  # a lure takes one of the six places
        assert set(counts) == {str(n) for n in range(top + 1)} and max(counts.values()) - min(counts.values()) <= 1
        shapes = Counter(s.answers[0] for s in samples if s.question_type == "spatial")
        assert set(shapes) == set(SHAPES) and min(shapes.values()) > sum(shapes.values()) / 3 * 0.75
        assert all(2 <= len(s.meta["objects"]) <= 6 for s in samples)


# ---- boxes are exact in the pixels --------------------------------------------------------------------------------


def check_scene_pixels(sample) -> None:
    a = pixels(sample)
    assert a.shape == (128, 128, 3)
    bg = a[0, 0]
    assert (a[[0, 0, -1, -1], [0, -1, 0, -1]] == bg).all()
    inside = np.zeros(a.shape[:2], bool)
    for o in sample.meta["objects"]:
        x, y, w, h = (int(v) for v in o["box"])
        region = a[y : y + h, x : x + w]
        ink = (region == COLORS[o["color"]]).all(-1)
        assert (ink | (region == bg).all(-1)).all(), o  # nothing but the object's colour and the background
        assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any(), o  # touches every edge
        if o["shape"] == "rectangle":
            assert ink.all()
        elif o["shape"] == "triangle":  # apex up: full base, a 1–2 px tip
            assert ink[-1].all() and ink[0].sum() <= 2
        else:  # a disc: centre filled, corners empty
            assert ink[h // 2, w // 2] and not ink[0, 0] and not ink[-1, -1]
        assert not inside[y : y + h, x : x + w].any()  # objects do not overlap
        inside[y : y + h, x : x + w] = True
    assert (a[~inside] == bg).all()  # outside every box: background only
    for box in sample.boxes:
        assert list(box) in [o["box"] for o in sample.meta["objects"]]
    for box in sample.meta.get("lure_boxes", []):
        assert box in [o["box"] for o in sample.meta["objects"]]


def test_boxes_are_exact_in_the_pixels(splits):
    for sample in one_per_scene(splits["test"]) + one_per_scene(splits["lures"])[:600]:
        check_scene_pixels(sample)


# ---- every answer, recomputed from the objects with a plain loop --------------------------------------------------

COLOR = "|".join(COLORS)
SHAPE = "|".join(SHAPES)
SIZE = "small|large"


def centre(o, axis: int) -> float:
    return o["box"][axis] + o["box"][axis + 2] / 2


def recompute(sample):
    """(answer, boxes) of a question from its text and the scene's objects, independently of the loader."""
    objs, q = sample.meta["objects"], sample.question

    def picked(**want):
        found = []
        for o in objs:
            if all(v is None or o[k] == v for k, v in want.items()):
                found.append(o)
        return found

    if m := re.fullmatch(rf"what color is the (?:({SIZE}) )?({SHAPE})\?", q):
        (o,) = picked(size=m[1], shape=m[2])  # the named object is unique
        return o["color"], [o["box"]], tuple(COLORS)
    if m := re.fullmatch(rf"what shape is the (?:({SIZE}) )?({COLOR}) object\?", q):
        (o,) = picked(size=m[1], color=m[2])
        return o["shape"], [o["box"]], SHAPES
    if m := re.fullmatch(rf"is there a ({COLOR}) ({SHAPE})\?", q):
        found = picked(color=m[1], shape=m[2])
        return ("yes" if found else "no"), [o["box"] for o in found], ("yes", "no")
    if m := re.fullmatch(rf"how many (?:({SHAPE})s|({COLOR}) objects) are there\?", q):
        found = picked(shape=m[1], color=m[2])
        return str(len(found)), [o["box"] for o in found], tuple(str(n) for n in range(7))
    m = re.fullmatch(rf"what shape is (left of|right of|above|below) the (?:({SIZE}) )?({COLOR}) ({SHAPE})\?", q)
    assert m, q
    (ref,) = picked(size=m[2], color=m[3], shape=m[4])
    axis = 0 if m[1] in ("left of", "right of") else 1
    before = m[1] in ("left of", "above")
    side = []
    for o in objs:
        if o is not ref and (centre(o, axis) < centre(ref, axis) if before else centre(o, axis) > centre(ref, axis)):
            side.append(o)
    (answer,) = side  # one object on that side, by centres ...
    a0, a1 = answer["box"][axis], answer["box"][axis] + answer["box"][axis + 2]
    r0, r1 = ref["box"][axis], ref["box"][axis] + ref["box"][axis + 2]
    assert (a1 <= r0) if before else (a0 >= r1)  # ... and wholly on that side, by boxes
    return answer["shape"], [answer["box"], ref["box"]], SHAPES


def test_every_answer_is_right_by_construction(splits):
    for samples in splits.values():
        for s in samples:
            answer, boxes, choices = recompute(s)
            assert s.answers == (answer,) and [list(b) for b in s.boxes] == boxes, s.id
            assert s.choices == choices and answer in choices


# ---- lures ----------------------------------------------------------------------------------------------------------


def test_lures_share_all_but_the_asked_attribute_and_draw_the_eye(splits):
    for s in splits["lures"]:
        lure = s.meta["lure"]
        assert s.meta["lure_boxes"] == [lure["box"]] and lure["size"] == "large"
        assert abs(centre(lure, 0) - 64) <= 9 and abs(centre(lure, 1) - 64) <= 9  # central
        assert lure["box"] not in [list(b) for b in s.boxes] and s.meta["lure_answer"] != s.answers[0]
        kind, q = s.question_type, s.question
        if kind == "attribute":
            target = next(o for o in s.meta["objects"] if o["box"] == list(s.boxes[0]))
            asks = s.meta["asks"]
            other = "shape" if asks == "color" else "color"
            assert target["size"] == "small" and f"small {target[other]}" in q  # named with a second attribute
            assert lure[other] == target[other] and lure[asks] != target[asks] == s.answers[0]
            assert s.meta["lure_answer"] == lure[asks]
        elif kind == "existence":
            m = re.fullmatch(rf"is there a ({COLOR}) ({SHAPE})\?", q)
            assert m and (lure["color"] == m[1]) + (lure["shape"] == m[2]) == 1  # one attribute off
            assert s.meta["lure_answer"] == ("no" if s.answers[0] == "yes" else "yes")
        elif kind == "count":
            m = re.fullmatch(rf"how many (?:({SHAPE})s|({COLOR}) objects) are there\?", q)
            assert m
            counted = [o for o in s.meta["objects"] if list(o["box"]) in [list(b) for b in s.boxes]]
            attr, other = ("shape", "color") if m[1] else ("color", "shape")
            assert lure[attr] != (m[1] or m[2]) and all(o[other] == lure[other] for o in counted)
            assert s.meta["lure_answer"] == str(int(s.answers[0]) + 1)
        else:
            answer, ref = (next(o for o in s.meta["objects"] if o["box"] == list(b)) for b in s.boxes)
            assert (lure["color"], lure["size"]) == (answer["color"], answer["size"])
            assert lure["shape"] != answer["shape"]
            dist = [np.hypot(centre(o, 0) - centre(ref, 0), centre(o, 1) - centre(ref, 1)) for o in (lure, answer)]
            assert dist[0] < dist[1] and s.meta["lure_answer"] == lure["shape"]  # nearer the reference


def test_lure_pixels_hold_the_lure(splits):
    for s in splits["lures"][:200]:
        x, y, w, h = (int(v) for v in s.meta["lure_boxes"][0])
        region = pixels(s)[y : y + h, x : x + w]
        assert (region == COLORS[s.meta["lure"]["color"]]).all(-1).mean() > 0.4  # solid: a disc ~0.79, a triangle ~0.5


# ---- the spec -------------------------------------------------------------------------------------------------------


def test_spec_limit_shift_and_bad_splits():
    few = load_dataset("scenes:test", limit=8).samples
    assert Counter(s.question_type for s in few) == {"attribute": 2, "existence": 2, "count": 2, "spatial": 2}
    shifted = load_dataset("scenes:lures?occlude=0.25", limit=4).samples
    assert shifted[0].load_image().size == (128, 128) and shifted[0].boxes is not None
    for spec in ("scenes:val", "scenes", "scenes:", "scenes:test:x", "scenes:Test"):
        with pytest.raises(UsageError) as err:
            load_dataset(spec)
        assert "train, test, lures" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(VrprobeError, match="splits train, test, lures"):
        load_scenes("val")


def test_zoo_answers_scenes_end_to_end():
    samples = {s.id: s for s in load_dataset("scenes:test", limit=8).samples}
    result = api.eval("zoo:llava", "scenes:test", limit=8, make_report=False)
    assert sorted(r["sample_id"] for r in result.records) == sorted(samples)
    for r in result.records:
        s = samples[r["sample_id"]]
        assert r["predicted"] in s.choices and 0 <= r["confidence"] <= 1 and r["image_size"] == [128, 128]
        assert ("attention_on_target" in r) == bool(s.boxes)  # grounded exactly where the answer has a target


# ---- easy-VQA boxes from the pixels --------------------------------------------------------------------------------


def test_easy_vqa_box_hand_checked_and_tight():
    samples = load_easy_vqa("test")
    # test image 0, a red triangle: the pixels differing from the background by more than 16 span columns 2..13 and
    # rows 43..53 (read off the difference map; the faint 12 at (row 42, col 7) and 16 at (43, 6) stay out)
    assert samples[0].meta["image_id"] == 0 and samples[0].boxes == ((2.0, 43.0, 12.0, 11.0),)
    by_image = {}
    for s in samples:
        assert by_image.setdefault(s.meta["image_id"], s.boxes) == s.boxes  # one box per image
    for image_id in range(60):
        ((x, y, w, h),) = (tuple(int(v) for v in b) for b in by_image[image_id])
        a = np.asarray(Image.open(package_root() / "test" / "images" / f"{image_id}.png").convert("RGB"))
        bg = Counter(map(tuple, np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]))).most_common(1)[0][0]
        diff = np.abs(a.astype(int) - np.array(bg)).max(-1)
        shape = diff > TOLERANCE
        box = np.zeros_like(shape)
        box[y : y + h, x : x + w] = True
        assert not (shape & ~box).any()  # holds every shape pixel
        inner = shape[y : y + h, x : x + w]
        assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()  # touches each edge
        ys, xs = np.nonzero(diff > 0)  # antialiasing: the faintest fringe lies within 1 px of the box
        assert xs.min() >= x - 1 and ys.min() >= y - 1 and xs.max() <= x + w and ys.max() <= y + h


def test_easy_vqa_box_of_a_drawn_shape_blank_and_corrupt_images(tmp_path):
    (tmp_path / "test" / "images").mkdir(parents=True)
    shutil.copy(package_root() / "answers.txt", tmp_path / "answers.txt")
    drawn = np.full((64, 64, 3), (240, 250, 230), np.uint8)
    drawn[0:9, 20:31] = (0, 0, 255)  # a blue block touching the top border
    drawn[9, 20:31] = (236, 246, 226)  # a faint rim, within the tolerance: not the shape
    Image.fromarray(drawn).save(tmp_path / "test" / "images" / "0.png")
    Image.new("RGB", (64, 64), (240, 250, 230)).save(tmp_path / "test" / "images" / "1.png")
    rows = [["what color is the shape?", "blue", 0], ["is there a circle?", "no", 0], ["what shape is it?", "x", 1]]
    (tmp_path / "test" / "questions.json").write_text(json.dumps(rows))
    a, b, c = load_easy_vqa("test", tmp_path)
    assert a.boxes == b.boxes == ((20.0, 0.0, 11.0, 9.0),)
    assert c.boxes is None  # no shape pixels: no box known
    (tmp_path / "test" / "images" / "1.png").write_bytes(b"not a png")
    with pytest.raises(VrprobeError, match="1.png"):
        load_easy_vqa("test", tmp_path)
