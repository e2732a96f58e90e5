"""easy-VQA loading, spec parsing and the stratified --limit subset."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from vrprobe.data import load_dataset, stratified_subset
from vrprobe.data.easy_vqa import package_root
from vrprobe.errors import UsageError, VrprobeError


def test_easy_vqa_test_split_matches_package():
    ds = load_dataset("easy-vqa:test")
    rows = json.loads((package_root() / "test" / "questions.json").read_text())
    assert len(ds) == len(rows)
    types = Counter(s.question_type for s in ds.samples)
    assert set(types) == {"yes/no", "color", "shape"}
    assert types["yes/no"] == sum(1 for r in rows if r[1] in ("yes", "no"))
    s = ds.samples[0]
    assert s.question == rows[0][0] and s.answers == (rows[0][1],)
    assert s.load_image().size == (64, 64)
    assert len(s.choices) == 13 and s.answers[0] in s.choices


def test_limit_keeps_type_mix_is_deterministic_and_spreads_images():
    full = load_dataset("easy-vqa:test").samples
    a = load_dataset("easy-vqa:test", limit=300, seed=0).samples
    b = load_dataset("easy-vqa:test", limit=300, seed=0).samples
    c = load_dataset("easy-vqa:test", limit=300, seed=1).samples
    assert [s.id for s in a] == [s.id for s in b]
    assert [s.id for s in a] != [s.id for s in c]
    assert len(a) == 300
    full_mix = Counter(s.question_type for s in full)
    sub_mix = Counter(s.question_type for s in a)
    for t, n in full_mix.items():
        assert abs(sub_mix[t] - 300 * n / len(full)) <= 1
    assert len({s.meta["image_id"] for s in a}) > 250  # not the first rows, which share images
    assert len(stratified_subset(full[:10], 50)) == 10


def test_blank_ablation_replaces_images():
    s = load_dataset("easy-vqa:test", limit=3, image_ablation="blank").samples[0]
    im = s.load_image()
    assert im.size == (64, 64) and im.getextrema() == ((255, 255),) * 3


@pytest.mark.parametrize("spec", ["nope:test", "easy-vqa:", "easy-vqa"])
def test_bad_specs_are_usage_errors(spec):
    with pytest.raises(UsageError):
        load_dataset(spec)


def test_bad_split_missing_dir_and_empty_dataset(tmp_path):
    with pytest.raises(VrprobeError, match="splits"):
        load_dataset("easy-vqa:validation")
    with pytest.raises(VrprobeError, match="not found"):
        load_dataset(f"easy-vqa:{tmp_path / 'missing'}:test")
    (tmp_path / "test").mkdir()
    (tmp_path / "answers.txt").write_text("yes\nno\n")
    (tmp_path / "test" / "questions.json").write_text("[]")
    with pytest.raises(VrprobeError, match="empty"):
        load_dataset(f"easy-vqa:{tmp_path}:test")
    (tmp_path / "test" / "questions.json").write_text("[[")
    with pytest.raises(VrprobeError, match="malformed JSON"):
        load_dataset(f"easy-vqa:{tmp_path}:test")
    with pytest.raises(UsageError):
        load_dataset("easy-vqa:test", limit=0)


def test_shifted_split_is_seeded_and_changes_images():
    import numpy as np

    clean = load_dataset("easy-vqa:test", limit=5).samples
    a = load_dataset("easy-vqa:test?noise=0.3", limit=5, seed=1).samples
    b = load_dataset("easy-vqa:test?noise=0.3", limit=5, seed=1).samples
    c = load_dataset("easy-vqa:test?noise=0.3", limit=5, seed=2).samples
    x, y, z = (np.asarray(s[0].load_image(), dtype=float) for s in (a, b, c))
    base = np.asarray(clean[0].load_image(), dtype=float)
    assert (x == y).all() and not (x == z).all()
    assert 0.1 < np.abs(x - base).mean() / 255 < 0.4
    occ = np.asarray(load_dataset("easy-vqa:test?occlude=0.25", limit=5).samples[0].load_image())
    grey = (occ == 128).all(-1)
    assert grey.sum() == 32 * 32  # a square over a quarter of the 64x64 image
    for bad in ("easy-vqa:test?blur=1", "easy-vqa:test?noise=x", "easy-vqa:test?occlude=2"):
        with pytest.raises(UsageError):
            load_dataset(bad)
