"""GQA and POPE loaders (official layouts, lmms-lab parquet), their target boxes, bad input, and POPE's metrics."""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image

import vrprobe
from vrprobe.data import load_dataset
from vrprobe.data.boxes import TOLERANCE, BoxSkip, DataWarning, check_boxes
from vrprobe.data.vqa import VQA_INSTRUCTION
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.metrics.pope import pope_answer, pope_counts, pope_metrics, pope_summary

from fixtures import (
    BAD_BOXES,
    easy_images,
    gqa_image_id,
    shape_box,
    write_gqa,
    write_pope,
    write_pope_parquet,
)

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REAL_POPE = Path("/work/shared/benchmarks/pope")


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch):
    """Keep the `datasets` Arrow cache in a temporary folder (outside the folders the tests search for parquet)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-cache")))


def load_quiet(spec: str):
    """`load_dataset(spec)`, failing on any `DataWarning` (a clean fixture skips nothing and lacks nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        return load_dataset(spec).samples


def fbox(box):
    return tuple(float(v) for v in box)


# --- check_boxes ------------------------------------------------------------------------------------------------------


def test_check_boxes_clips_within_tolerance_and_dedups():
    # 0.5 px past the left and 1 px past the right/bottom edges: clipped to the 100 × 50 image
    assert check_boxes([(-0.5, 10, 20.5, 5), (90, 40, 11, 11), (1, 2, 3, 4), (1, 2, 3, 4)], 100, 50, "t") == (
        (0.0, 10.0, 20.0, 5.0),
        (90.0, 40.0, 10.0, 10.0),
        (1.0, 2.0, 3.0, 4.0),
    )
    assert check_boxes([], 100, 50, "t") == ()
    assert TOLERANCE == 1.0


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((10, 10, -5, 5), "negative box size"),
        ((10, 10, 5, -1), "negative box size"),
        ((10, 10, 0, 5), "zero-area box"),
        ((10, 10, 5, 0), "zero-area box"),
        ((100, 10, 0.5, 5), "zero-area box"),  # inside the tolerance band only: nothing left after clipping
        ((95, 10, 7, 5), "box outside the image"),  # 2 px past the right edge
        ((-2, 10, 5, 5), "box outside the image"),
        ((200, 200, 5, 5), "box outside the image"),
    ],
)
def test_check_boxes_skips(box, reason):
    with pytest.raises(BoxSkip, match=r"^where: box") as err:
        check_boxes([(1, 1, 2, 2), box], 100, 50, "where")
    assert err.value.reason == reason and isinstance(err.value, VrprobeError)


@pytest.mark.parametrize(
    ("boxes", "size", "match"),
    [
        ([(1, 2, 3)], (10, 10), "four numbers"),
        ([("a", 2, 3, 4)], (10, 10), "four numbers"),
        ([(1, 2, float("nan"), 4)], (10, 10), "finite"),
        ([(1, 2, 3, 4)], (0, 10), "image size must be positive"),
        ([(1, 2, 3, 4)], (None, 10), "image size must be two numbers"),
    ],
)
def test_check_boxes_errors(boxes, size, match):
    with pytest.raises(VrprobeError, match=match) as err:
        check_boxes(boxes, *size, "file.json: sample 7")
    assert not isinstance(err.value, BoxSkip) and "file.json: sample 7" in str(err.value)


# --- GQA --------------------------------------------------------------------------------------------------------------


def test_gqa_val_boxes_ids_types(tmp_path):
    root = write_gqa(tmp_path / "gqa", n=8)
    samples = load_quiet(f"gqa:{root}")  # default split: val
    assert len(samples) == 8
    assert [s.id for s in samples] == [f"gqa-val-{1000 + k:08d}" for k in range(8)]  # GQA's ids, zeros kept
    floor = (0.0, 48.0, 64.0, 16.0)  # w 65 in the graph: 1 px past the 64 px edge, clipped
    for k, (s, (image_id, color, shape)) in enumerate(zip(samples, easy_images()[:8], strict=True)):
        target = fbox(shape_box(image_id))
        assert s.boxes == [(target,), (target, floor), (target,), ()][k % 4]
        assert s.question_type == ["query", "verify", "query", "choose"][k % 4]
        assert s.answers == ([color, "yes", shape, "plain"][k % 4],) and s.choices is None
        assert s.meta["benchmark"] == "gqa" and s.meta["image_id"] == gqa_image_id(image_id)
        assert s.meta["instruction"] == VQA_INSTRUCTION and s.text.endswith(VQA_INSTRUCTION)
        assert s.image_path == root / "images" / f"{gqa_image_id(image_id)}.jpg"
    assert samples[1].meta["target_objects"] == (f"{gqa_image_id(easy_images()[1][0])}1",) + (
        f"{gqa_image_id(easy_images()[1][0])}2",
    )
    assert samples[0].meta["semantic_type"] == "attr" and samples[0].meta["detailed_type"] == "color"
    assert samples[0].load_image().size == (64, 64)


def test_gqa_split_in_spec_and_testdev_without_scene_graphs(tmp_path):
    root = write_gqa(tmp_path / "gqa", n=4, split="testdev", scene_graphs=False)
    with pytest.warns(DataWarning, match="no testdev_sceneGraphs.json.*boxes None") as record:
        samples = load_dataset(f"gqa:{root}:testdev").samples
    assert len([w for w in record if issubclass(w.category, DataWarning)]) == 1  # said once, not per sample
    assert len(samples) == 4 and all(s.boxes is None for s in samples)
    assert samples[0].id == "gqa-testdev-00001000"
    with pytest.raises(VrprobeError, match="splits found .*: testdev"):
        load_dataset(f"gqa:{root}")  # default val is not there


def test_gqa_test_questions_without_answers_are_refused(tmp_path):
    root = write_gqa(tmp_path / "gqa", n=2, split="test", scene_graphs=False)
    path = root / "test_balanced_questions.json"
    questions = json.loads(path.read_text())
    path.write_text(json.dumps({q: {k: v for k, v in e.items() if k != "answer"} for q, e in questions.items()}))
    with pytest.warns(DataWarning), pytest.raises(VrprobeError, match="question 00001000 has no answer .*unlabelled"):
        load_dataset(f"gqa:{root}:test")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("negative", "negative box size"),
        ("outside", "box outside the image"),
        ("zero", "zero-area box"),
        ("missing", "annotated object missing from the scene graph"),
    ],
)
def test_gqa_bad_boxes_are_counted_skips(tmp_path, bad, reason):
    assert bad in BAD_BOXES
    root = write_gqa(tmp_path / "gqa", n=8, bad=bad)
    with pytest.warns(DataWarning, match=rf"skipped 1 of 8 samples: {reason} × 1 \(first: .*question 00001000"):
        samples = load_dataset(f"gqa:{root}").samples
    assert [s.id for s in samples] == [f"gqa-val-{1000 + k:08d}" for k in range(1, 8)]


def test_gqa_malformed_files(tmp_path):
    root = write_gqa(tmp_path / "gqa", n=2)
    graphs = json.loads((root / "val_sceneGraphs.json").read_text())
    gid = next(iter(graphs))
    graphs[gid]["objects"][f"{gid}1"]["w"] = "wide"
    (root / "val_sceneGraphs.json").write_text(json.dumps(graphs))
    with pytest.raises(VrprobeError, match=f"val_sceneGraphs.json: image {gid}, question 00001000: a box must be"):
        load_dataset(f"gqa:{root}")
    (root / "val_sceneGraphs.json").write_text(json.dumps({}))  # no graph for any image: every question skipped
    skipped = pytest.warns(DataWarning, match="skipped 2 of 2 samples: image not in the scene graphs")
    with skipped, pytest.raises(VrprobeError, match="is empty"):
        load_dataset(f"gqa:{root}")
    (root / "images" / f"{gid}.jpg").unlink()
    (root / "val_sceneGraphs.json").unlink()
    with pytest.warns(DataWarning), pytest.raises(VrprobeError, match=f"image file not found: .*{gid}.jpg"):
        load_dataset(f"gqa:{root}")


# --- POPE -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("images", "instances"), [("val2014", "annotations"), ("", ""), ("images", "annotations")])
def test_pope_json_boxes(tmp_path, images, instances):
    root = write_pope(tmp_path / "pope", n=6, images=images, instances=instances)
    samples = load_quiet(f"pope:{root}")  # default split: random
    assert len(samples) == 12
    assert [s.id for s in samples] == [f"pope-random-{i}" for i in range(1, 13)]
    for k, (image_id, _, shape) in enumerate(easy_images()[:6]):
        yes, no = samples[2 * k], samples[2 * k + 1]
        assert yes.question == f"Is there a {shape} in the image?" and yes.answers == ("yes",)
        assert no.answers == ("no",) and no.boxes == ()
        extra = ((0.0, 0.0, 8.0, 8.0),) if k == 1 else ()  # every instance of the category; the person is not asked
        assert yes.boxes == (fbox(shape_box(image_id)), *extra)
        for s in (yes, no):
            assert s.choices == ("yes", "no") and s.question_type == "existence"
            assert s.meta["benchmark"] == "pope" and s.meta["split"] == "random" and s.meta["image_id"] == image_id
            assert s.image_path.parent == root / images and s.image_path.name == f"COCO_val2014_{image_id:012d}.jpg"
        assert yes.meta["object"] == shape
    assert samples[0].load_image().size == (64, 64)


@pytest.mark.parametrize("split", ["popular", "adversarial"])
def test_pope_splits(tmp_path, split):
    root = write_pope(tmp_path / "pope", n=3, split=split)
    samples = load_quiet(f"pope:{root}:{split}")
    assert [s.id for s in samples] == [f"pope-{split}-{i}" for i in range(1, 7)]
    with pytest.raises(VrprobeError, match=f"POPE file missing: .*coco_pope_random.json .*splits found .*: {split}"):
        load_dataset(f"pope:{root}")
    with pytest.raises(UsageError, match="unknown POPE split 'val'"):
        load_dataset(f"pope:{root}:val")


def test_pope_without_instances_has_no_boxes(tmp_path):
    root = write_pope(tmp_path / "pope", n=3, instances=None)
    with pytest.warns(DataWarning, match="no instances_val2014.json .*boxes None") as record:
        samples = load_dataset(f"pope:{root}").samples
    assert len([w for w in record if issubclass(w.category, DataWarning)]) == 1
    assert len(samples) == 6 and all(s.boxes is None for s in samples)


def test_pope_without_labels_is_one_error(tmp_path):
    root = write_pope(tmp_path / "pope", n=3, labels=False)
    with pytest.raises(VrprobeError, match=r"coco_pope_random.json line 1 \(question_id 1\): no label") as err:
        load_dataset(f"pope:{root}")
    assert "\n" not in str(err.value)
    rows = (root / "coco_pope_random.json").read_text().splitlines()
    rows[0] = json.dumps({**json.loads(rows[0]), "label": "maybe"})
    (root / "coco_pope_random.json").write_text("\n".join(rows))
    with pytest.raises(VrprobeError, match="line 1 .*label 'maybe' is not yes or no"):
        load_dataset(f"pope:{root}")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("negative", "negative box size"),
        ("outside", "box outside the image"),
        ("zero", "zero-area box"),
        ("missing", "no instance of the asked object"),
    ],
)
def test_pope_bad_boxes_are_counted_skips(tmp_path, bad, reason):
    root = write_pope(tmp_path / "pope", n=3, bad=bad)
    with pytest.warns(DataWarning, match=rf"skipped 1 of 6 samples: {reason} × 1 \(first: .*line 1 \(question_id 1\)"):
        samples = load_dataset(f"pope:{root}").samples
    assert [s.id for s in samples] == [f"pope-random-{i}" for i in range(2, 7)]


def test_pope_unknown_object_and_missing_image(tmp_path):
    root = write_pope(tmp_path / "pope", n=3)
    path = root / "coco_pope_random.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["text"] = "Is there a unicorn in the image?"  # a yes question: skipped, counted
    rows[3]["text"] = "Is there a dragon in the image?"  # a no question: no target needed, kept
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(DataWarning, match="skipped 1 of 6 samples: asked object is no COCO category × 1"):
        samples = load_dataset(f"pope:{root}").samples
    assert [s.id for s in samples] == ["pope-random-1", "pope-random-2", *(f"pope-random-{i}" for i in range(4, 7))]
    assert samples[2].boxes == () and samples[2].meta["object"] == "dragon"
    (root / "val2014" / rows[0]["image"]).unlink()
    with pytest.raises(VrprobeError, match=f"image file not found: {rows[0]['image']}"):
        load_dataset(f"pope:{root}")


@pytest.mark.parametrize("split", ["random", "adversarial"])
def test_pope_parquet(tmp_path, split):
    root = write_pope_parquet(tmp_path / "lmms", n=3)
    json_root = write_pope(tmp_path / "orig", n=3, split=split)
    samples = load_quiet(f"pope:{root}:{split}")
    reference = load_quiet(f"pope:{json_root}:{split}")
    assert len(samples) == 6 and all(s.image_path is None for s in samples)
    for s, r in zip(samples, reference, strict=True):  # the same questions, ids, labels and boxes as the JSON layout
        assert (s.id, s.question, s.answers, s.choices, s.boxes, s.meta) == (
            r.id,
            r.question,
            r.answers,
            r.choices,
            r.boxes,
            r.meta,
        )
        assert s.load_image().size == (64, 64)
    one_file = root / "data" / "test-00000-of-00002.parquet"  # 9 of the 18 rows: 6 adversarial, 3 popular
    with pytest.warns(DataWarning, match="no instances_val2014.json"):  # looked up next to the file
        single = load_dataset(f"pope:{one_file}:adversarial").samples
    assert [s.id for s in single] == [f"pope-adversarial-{i}" for i in range(1, 7)] and single[0].boxes is None
    no_answers = write_pope_parquet(tmp_path / "unlabelled", n=2, labels=False)
    with pytest.raises(VrprobeError, match="no 'answer' column .*needs labels"):
        load_dataset(f"pope:{no_answers}")


def test_real_pope_question_files(tmp_path):
    """The released POPE questions (3 splits × 3,000, half yes) parse; stand-in images for the 500 COCO files."""
    if not all((REAL_POPE / f"coco_pope_{s}.json").is_file() for s in ("random", "popular", "adversarial")):
        pytest.skip(f"POPE question files not in {REAL_POPE}")
    for split in ("random", "popular", "adversarial"):
        shutil.copy(REAL_POPE / f"coco_pope_{split}.json", tmp_path)
    lines = [line for s in ("random", "popular", "adversarial") for line in (tmp_path / f"coco_pope_{s}.json").open()]
    names = {json.loads(line)["image"] for line in lines}
    (tmp_path / "val2014").mkdir()
    for name in names:
        Image.new("RGB", (4, 4), (128, 64, 32)).save(tmp_path / "val2014" / name, "JPEG")
    for split in ("random", "popular", "adversarial"):
        with pytest.warns(DataWarning, match="no instances_val2014.json"):
            samples = load_dataset(f"pope:{tmp_path}:{split}").samples
        assert len(samples) == 3000 and len({s.id for s in samples}) == 3000
        assert sum(s.answers == ("yes",) for s in samples) == 1500
        assert len({s.image_path for s in samples}) == 500
        assert all(s.meta["object"] for s in samples) and all(s.boxes is None for s in samples)


# --- POPE metrics -----------------------------------------------------------------------------------------------------


def test_pope_answer_reading():
    assert [pope_answer(t) for t in ("yes", "no", "No.", "No, there is none.", "There is not a dog", "")] == [
        "yes",
        "no",
        "no",
        "no",
        "no",
        "yes",
    ]
    # POPE reads only the first sentence and whole words, case-sensitively
    assert [pope_answer(t) for t in ("Yes. No doubt", "NO", "nothing", "Yes, no")] == ["yes", "yes", "yes", "no"]


def test_pope_metrics_hand_count():
    labels = ["yes", "yes", "yes", "yes", "no", "no", "no", "no", "no", "no"]
    predicted = ["yes", "yes", "yes", "no", "yes", "yes", "no", "no", "no", "No, it is not."]
    # by hand: TP 3 (items 1-3), FN 1 (item 4), FP 2 (items 5-6), TN 4 (items 7-10)
    assert pope_counts(predicted, labels) == {"tp": 3, "fp": 2, "tn": 4, "fn": 1}
    m = pope_metrics(predicted, labels)
    precision, recall = 3 / 5, 3 / 4
    assert m["precision"] == pytest.approx(precision, abs=1e-15)
    assert m["recall"] == pytest.approx(recall, abs=1e-15)
    assert m["f1"] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-15)  # = 2/3
    assert m["f1"] == pytest.approx(2 / 3, abs=1e-15)
    assert m["yes_ratio"] == pytest.approx(5 / 10, abs=1e-15)
    assert m["accuracy"] == pytest.approx(7 / 10, abs=1e-15)


def test_pope_metrics_edge_cases():
    none_yes = pope_metrics(["no", "no", "no"], ["yes", "no", "no"])
    assert math.isnan(none_yes["precision"]) and math.isnan(none_yes["f1"])
    assert none_yes["recall"] == 0.0 and none_yes["yes_ratio"] == 0.0  # exact: 0 / 1 and 0 / 3
    all_wrong = pope_metrics(["yes", "no"], ["no", "yes"])
    assert (all_wrong["precision"], all_wrong["recall"], all_wrong["f1"]) == (0.0, 0.0, 0.0)  # exact: 0 / 1 each
    no_positive = pope_metrics(["yes", "no"], ["no", "no"])
    assert math.isnan(no_positive["recall"]) and math.isnan(no_positive["f1"])
    empty = pope_metrics([], [])
    assert all(math.isnan(v) for v in empty.values())
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        pope_metrics(["yes", "no"], ["yes"])


def test_pope_summary_only_for_pope():
    records = [{"predicted": "yes", "answers": ["yes"]}, {"predicted": "yes", "answers": ["no"]}]
    assert set(pope_summary(records, ["pope", "pope"])) == {"precision", "recall", "f1", "yes_ratio"}
    assert pope_summary(records, ["pope", "gqa"]) == {} and pope_summary(records, [None, None]) == {}
    assert pope_summary([], []) == {}


def test_eval_writes_pope_metrics(tmp_path):
    root = write_pope(tmp_path / "pope", n=6)
    result = vrprobe.eval("zoo:llava", f"pope:{root}", out=tmp_path / "run", batch_size=4, make_report=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    records = result.records
    assert len(records) == 12 and {r["predicted"] for r in records} <= {"yes", "no"}
    tp = sum(r["predicted"] == "yes" and r["answers"][0] == "yes" for r in records)
    fp = sum(r["predicted"] == "yes" and r["answers"][0] == "no" for r in records)
    fn = sum(r["predicted"] == "no" and r["answers"][0] == "yes" for r in records)
    expected = pope_metrics([r["predicted"] for r in records], [r["answers"][0] for r in records])
    for key in ("precision", "recall", "f1", "yes_ratio"):
        assert key in summary and key in result.summary
        # exact: the same function on the same records (JSON round-trips floats exactly)
        assert summary[key] == expected[key] or (math.isnan(summary[key]) and math.isnan(expected[key]))
    assert summary["yes_ratio"] == pytest.approx((tp + fp) / 12, abs=1e-15)
    if tp + fp:
        assert summary["precision"] == pytest.approx(tp / (tp + fp), abs=1e-15)
    assert summary["recall"] == pytest.approx(tp / (tp + fn), abs=1e-15)  # 6 yes labels: defined
    assert summary["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-15)  # closed set: the same number
    assert "precision (POPE)" in summary["definitions"]
