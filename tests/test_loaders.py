"""VQA v2, OK-VQA and ScienceQA loaders (JSON layout and lmms-lab-style parquet) through `load_dataset` specs."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest

from vrprobe.data import load_dataset
from vrprobe.data.answers import vqa_accuracy
from vrprobe.data.scienceqa import SCIENCEQA_INSTRUCTION
from vrprobe.data.vqa import VQA_INSTRUCTION
from vrprobe.errors import UsageError, VrprobeError

from fixtures import fixture_items, write_okvqa, write_parquet, write_scienceqa, write_vqav2

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch):
    """Keep the `datasets` Arrow cache in a temporary folder (outside the folders the tests search for parquet)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-cache")))


def pixels(sample):
    return np.asarray(sample.load_image(), dtype=np.float64)


def same_content(a, b):
    """Samples agree on everything but where the image comes from (and, for ScienceQA parquet, the id)."""
    return (a.question, a.answers, a.choices, a.meta) == (b.question, b.answers, b.choices, b.meta)


@pytest.mark.parametrize("flat", [False, True])
def test_vqav2_json(tmp_path, flat):
    root = write_vqav2(tmp_path / "vqa", flat=flat)
    samples = load_dataset(f"vqav2:{root}").samples
    items = fixture_items(12)
    assert len(samples) == 12
    assert Counter(s.question_type for s in samples) == {"other": 6, "yes/no": 3, "number": 3}
    s, it = samples[0], items[0]
    assert s.id == str(it.image_id * 1000) and s.question == "What color is the shape?"
    assert s.answers == it.answers and len(s.answers) == 10 and isinstance(s.answers, tuple)
    assert s.choices is None
    assert s.meta["instruction"] == VQA_INSTRUCTION == "Answer the question using a single word or phrase."
    assert s.meta["metric"] == "vqa" and s.meta["image_id"] == it.image_id
    assert s.meta["multiple_choice_answer"] == it.color and s.meta["vqa_question_type"] == "what color is the"
    assert s.text == f"{s.question}\n{VQA_INSTRUCTION}"
    assert s.image_path.name == f"COCO_val2014_{it.image_id:012d}.jpg"
    assert (s.image_path.parent == root) is flat
    assert s.load_image().size == (64, 64)
    assert vqa_accuracy(it.color, s.answers) == 1.0


def test_okvqa_json_and_split_in_spec(tmp_path):
    root = write_okvqa(tmp_path / "ok", n=8, split="train2014")
    ds = load_dataset(f"okvqa:{root}:train2014")
    assert len(ds) == 8 and all(s.meta["metric"] == "vqa" and len(s.answers) == 10 for s in ds.samples)
    assert ds.samples[0].image_path.parent.name == "train2014"
    with pytest.raises(VrprobeError, match="splits found .*train2014"):
        load_dataset(f"okvqa:{root}")  # default split val2014 is not there


def test_scienceqa_json(tmp_path):
    root = write_scienceqa(tmp_path / "sqa")
    samples = load_dataset(f"scienceqa:{root}").samples
    assert len(samples) == 12  # the 4 text-only problems are skipped
    assert [s.id for s in samples] == [str(i) for i in range(1, 13)]
    problems = json.loads((root / "problems.json").read_text())
    for s in samples:
        p = problems[s.id]
        assert s.choices == tuple("ABCD"[: len(p["choices"])]) and 2 <= len(s.choices) <= 4
        assert s.answers == ("ABCD"[p["answer"]],)
        assert s.meta["options"] == tuple(p["choices"]) and s.meta["question_type"] == p["subject"]
        assert s.meta["instruction"] == SCIENCEQA_INSTRUCTION and s.meta["metric"] == "choice"
        assert s.image_path == root / "images" / "test" / s.id / "image.png"
    assert samples[0].question == "Which color is the shape?\nA. red\nB. green"
    assert samples[1].question.startswith("Context: The picture shows one shape.\nWhich color is the shape?\nA. ")
    assert samples[2].question.count("\n") == 4 and samples[2].meta["hint"] == ""
    for s, it in zip(samples, fixture_items(12), strict=True):
        assert s.meta["options"][ord(s.answers[0]) - ord("A")] == it.color
        assert f"\n{s.answers[0]}. {it.color}" in s.question
    assert samples[0].load_image().size == (64, 64)
    with pytest.raises(VrprobeError, match="empty"):
        load_dataset(f"scienceqa:{root}:train")  # its only problem has no image


@pytest.mark.parametrize("kind", ["vqav2", "okvqa", "scienceqa"])
def test_parquet_matches_json_loader(tmp_path, kind):
    writer = {"vqav2": write_vqav2, "okvqa": write_okvqa, "scienceqa": write_scienceqa}[kind]
    json_samples = load_dataset(f"{kind}:{writer(tmp_path / 'json')}").samples
    folder = write_parquet(tmp_path / "pq", kind)
    pq_samples = load_dataset(f"{kind}:{folder}").samples
    assert len(pq_samples) == len(json_samples) == 12
    for a, b in zip(json_samples, pq_samples, strict=True):
        assert same_content(a, b)
        assert b.image_path is None and b.image_fn is not None
        assert (a.id == b.id) is (kind != "scienceqa")
    assert np.array_equal(pixels(json_samples[7]), pixels(pq_samples[7]))  # a row of the second file
    one_file = sorted(folder.glob("*.parquet"))[0]
    assert len(load_dataset(f"{kind}:{one_file}")) == (4 if kind == "scienceqa" else 6)


def test_parquet_split_selection(tmp_path):
    write_parquet(tmp_path, "vqav2", n=8)
    write_parquet(tmp_path / "sub" / "testdev", "vqav2", n=4, split="part")
    with pytest.raises(VrprobeError, match="splits part, validation"):
        load_dataset(f"vqav2:{tmp_path}")
    assert len(load_dataset(f"vqav2:{tmp_path}:validation")) == 8
    assert len(load_dataset(f"vqav2:{tmp_path}:testdev")) == 4  # a sub-folder named like the split
    with pytest.raises(VrprobeError, match="no parquet files for split 'test'"):
        load_dataset(f"vqav2:{tmp_path}:test")
    with pytest.raises(VrprobeError, match="single parquet file"):
        load_dataset(f"vqav2:{next(tmp_path.glob('validation-*.parquet'))}:validation")


def test_parquet_bad_image_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_parquet(tmp_path, "okvqa", n=4)
    second = tmp_path / "val2014-00001-of-00002.parquet"
    table = pq.read_table(second).to_pylist()
    table[1]["image"] = {"bytes": b"not an image", "path": None}
    pq.write_table(pa.Table.from_pylist(table), second)
    samples = load_dataset(f"okvqa:{tmp_path}").samples
    assert samples[0].load_image().size == (64, 64)
    with pytest.raises(VrprobeError, match=r"val2014-00001-of-00002.parquet row 1"):
        samples[3].load_image()
    table[0]["image"] = None
    pq.write_table(pa.Table.from_pylist(table), second)
    with pytest.raises(VrprobeError, match=r"no image bytes in .*00001-of-00002.parquet row 0"):
        load_dataset(f"okvqa:{tmp_path}")


@pytest.mark.parametrize("kind", ["vqav2", "scienceqa"])
def test_limit_keeps_type_mix_and_shifts_apply(tmp_path, kind):
    root = {"vqav2": write_vqav2, "scienceqa": write_scienceqa}[kind](tmp_path, n=40)
    full = load_dataset(f"{kind}:{root}").samples
    sub = load_dataset(f"{kind}:{root}", limit=10, seed=0).samples
    assert len(sub) == 10
    full_mix, sub_mix = Counter(s.question_type for s in full), Counter(s.question_type for s in sub)
    assert set(sub_mix) == set(full_mix)
    for t, n in full_mix.items():
        assert abs(sub_mix[t] - 10 * n / len(full)) <= 1
    shifted = load_dataset(f"{kind}:{root}?noise=0.3&occlude=0.25", limit=3, seed=1).samples
    clean = load_dataset(f"{kind}:{root}", limit=3, seed=1).samples
    assert [s.id for s in shifted] == [s.id for s in clean]
    assert shifted[0].meta["shift"] == {"noise": 0.3, "occlude": 0.25}
    assert np.abs(pixels(shifted[0]) - pixels(clean[0])).mean() > 5


def test_parquet_shift_and_limit(tmp_path):
    folder = write_parquet(tmp_path, "vqav2", n=12)
    a = load_dataset(f"vqav2:{folder}?occlude=0.5", limit=4, seed=2).samples
    assert len(a) == 4 and Counter(s.question_type for s in a)["other"] == 2
    assert np.array_equal(pixels(a[0]), pixels(load_dataset(f"vqav2:{folder}?occlude=0.5", limit=4, seed=2).samples[0]))


def test_missing_and_malformed_files(tmp_path):
    root = write_vqav2(tmp_path / "vqa", n=4)
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").rename(root / "q.bak")
    with pytest.raises(VrprobeError, match="v2_OpenEnded_mscoco_val2014_questions.json"):
        load_dataset(f"vqav2:{root}")
    (root / "q.bak").rename(root / "v2_OpenEnded_mscoco_val2014_questions.json")
    (root / "v2_mscoco_val2014_annotations.json").write_text('{"annotations": [')
    with pytest.raises(VrprobeError, match="malformed JSON in .*v2_mscoco_val2014_annotations.json"):
        load_dataset(f"vqav2:{root}")
    sqa = write_scienceqa(tmp_path / "sqa", n=4)
    (sqa / "problems.json").write_text("{nope")
    with pytest.raises(VrprobeError, match="malformed JSON in .*problems.json"):
        load_dataset(f"scienceqa:{sqa}")
    with pytest.raises(VrprobeError, match="dataset path not found"):
        load_dataset(f"okvqa:{tmp_path / 'absent'}")


def test_absent_image_is_named(tmp_path):
    root = write_vqav2(tmp_path / "vqa", n=4)
    image_id = fixture_items(4)[2].image_id
    (root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg").unlink()
    with pytest.raises(VrprobeError, match=f"image file not found: .*COCO_val2014_{image_id:012d}.jpg"):
        load_dataset(f"vqav2:{root}")
    sqa = write_scienceqa(tmp_path / "sqa", n=4)
    (sqa / "images" / "test" / "3" / "image.png").unlink()
    with pytest.raises(VrprobeError, match=r"image file not found: .*images/test/3/image.png"):
        load_dataset(f"scienceqa:{sqa}")


def test_unknown_split_and_dataset(tmp_path):
    sqa = write_scienceqa(tmp_path / "sqa", n=4)
    with pytest.raises(VrprobeError, match="has splits test, train; got 'dev'"):
        load_dataset(f"scienceqa:{sqa}:dev")
    root = write_vqav2(tmp_path / "vqa", n=4)
    with pytest.raises(VrprobeError, match="splits found in .*: val2014"):
        load_dataset(f"vqav2:{root}:test2015")
    with pytest.raises(UsageError, match="known: .*vqav2.*okvqa.*scienceqa"):
        load_dataset(f"textvqa:{root}")
    with pytest.raises(UsageError, match="vqav2:PATH"):
        load_dataset("vqav2:")
