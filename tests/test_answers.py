"""The official VQA normalisation and accuracy, on cases worked out by hand from `vqaEval.py`'s rules."""

from __future__ import annotations

import pytest

from vrprobe.data.answers import binary_correct, normalize_answer, process_punctuation, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("the dog.", "dog"),
        ("yes.", "yes"),
        ("Yes", "yes"),
        ("a red car", "red car"),
        ("An apple", "apple"),
        ("Two", "2"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only none, zero … ten are mapped
        ("three dogs", "3 dogs"),
        ("dont know", "don't know"),
        ("don't know", "don't know"),  # the apostrophe is not in the punctuation set
        ("isnt", "isn't"),
        ("Im", "im"),  # the official table's capitalised keys never match after lower-casing
        ("1,000", "1000"),  # digit-comma-digit anywhere: every mark is deleted, not spaced
        ("1.5", "1.5"),  # a period followed by a digit stays
        ("3.", "3"),
        ("red, white", "red white"),  # ", " touches a space → deleted
        ("red,white", "red white"),  # no space, no digits → replaced by a space
        ("black/white", "black white"),
        ("t-shirt", "t shirt"),
        ("left - right", "left right"),
        ("what?!", "what"),
        ("(dog)", "dog"),
        ("  Cat\n", "cat"),
        ("fire\thydrant", "fire hydrant"),
        ("1:30", "1:30"),  # the colon is not in the set
        ("50%", "50%"),
        ("the the", ""),
    ],
)
def test_normalize_answer(raw, normal):
    assert normalize_answer(raw) == normal


def test_punctuation_rule_looks_at_the_original_text():
    # "-" touches a space in the input, so every "-" is deleted (not spaced), including the one inside "t-shirt"
    assert process_punctuation("t-shirt - red") == "tshirt  red"
    # a digit-comma-digit anywhere deletes all marks, even "/" between words
    assert process_punctuation("2,000 black/white") == "2000 blackwhite"


def test_period_strip_removes_at_most_32_periods():
    assert process_punctuation("." * 40) == "." * 8


def ten(matches: int, truth: str = "2", other: str = "3") -> list[str]:
    return [truth] * matches + [other] * (10 - matches)


@pytest.mark.parametrize(("k", "acc"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)])
def test_vqa_accuracy_by_number_of_matching_humans(k, acc):
    # k = 3: the 7 non-matching humans leave all 3 matches → 1 each; the 3 matching leave 2 → 2/3: (7 + 2) / 10
    assert vqa_accuracy("2", ten(k)) == pytest.approx(acc)


def test_prediction_and_ground_truth_are_both_normalised():
    assert vqa_accuracy("Two", ten(3)) == pytest.approx(0.9)
    assert vqa_accuracy("2", ten(3, truth="two")) == pytest.approx(0.9)
    assert vqa_accuracy("The dog.", ["dog"] * 4 + ["cat"] * 6) == 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 2 + ["no"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("1,000", ["1000"] * 10) == 1.0
    assert vqa_accuracy("a red car", ["red car", "Red car.", "car"] + ["blue car"] * 7) == pytest.approx(0.6)


def test_fewer_answers_and_none():
    assert vqa_accuracy("yes", []) == 0.0
    assert vqa_accuracy("yes", ["yes"]) == 0.0  # leave-one-out: a lone answer has no other humans to agree
    assert vqa_accuracy("yes", ["yes", "yes"]) == pytest.approx(1 / 3)
    assert vqa_accuracy("yes", ["yes"] * 4) == 1.0
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 2) == pytest.approx((3 * 2 / 3 + 2 * 1) / 5)


def test_binary_correct_threshold():
    assert binary_correct(0.3) == 0.0
    assert binary_correct(0.5) == 1.0
    assert binary_correct(0.6) == 1.0
    assert binary_correct(1.0) == 1.0
    assert [binary_correct(vqa_accuracy("2", ten(k))) for k in range(5)] == [0.0, 0.0, 1.0, 1.0, 1.0]
