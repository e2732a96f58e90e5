"""The study's grounding half: sharpness terciles, calibration and confident errors per tercile, the grounded table
keys, the verdict's two halves, POPE's metrics in a row, the example images, and a real small study on zoo:llava."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import pytest
from netcal.metrics import ECE
from PIL import Image
from scipy import stats
from sklearn.metrics import roc_auc_score

from vrprobe.analyses.grounding import (
    EXAMPLE_KINDS,
    answer_verdict,
    choose_examples,
    example_png,
    grounded_stats,
    heads_on_target,
    pope_stats,
    sharpness_bins,
)
from vrprobe.analyses.study import DEFINITIONS, StudyConfig, run_study
from vrprobe.data import Dataset, Sample, load_dataset
from vrprobe.metrics.calibration import bin_edges, ece
from vrprobe.metrics.reliability_bins import (
    by_group,
    confident_error_rate,
    ece_interval,
    error_among,
    terciles,
)
from vrprobe.runtime.runs import RunDir, read_records

GROUNDED = (
    "n_grounded",
    "r_on_target_correct",
    "r_on_target_overconfidence",
    "auroc_on_target",
    "pointing_accuracy",
    "mean_attention_lift",
    "looks_right_wrong",
    "heads_on_target",
)
ALWAYS = ("r_sharpness_confidence", "ece_by_sharpness", "confident_error_rate_by_sharpness")


def _loop_terciles(values: list[float]) -> list[int]:
    """Plain loop: average rank r (1 = lowest, ties share the mean of their positions), tercile ⌊3(r − 1)/n⌋."""
    n = len(values)
    out = []
    for v in values:
        below = sum(1 for w in values if w < v)
        equal = sum(1 for w in values if w == v)
        rank = below + (equal + 1) / 2
        out.append(math.floor(3 * (rank - 1) / n))
    return out


def _random(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf = rng.beta(5, 2, size=n)
    correct = (rng.random(n) < conf**1.5).astype(np.float64)
    return conf, correct, rng.random(n)


def test_terciles_by_hand_and_against_a_loop():
    # 6 distinct values: ranks 1..6 → ⌊3·(r−1)/6⌋ = 0,0,1,1,2,2 (in value order)
    assert terciles([0.9, 0.1, 0.5, 0.3, 0.7, 0.2]).tolist() == [2, 0, 1, 1, 2, 0]
    # ties share a tercile: ranks 1, 2.5, 2.5, 4 of n = 4 → 0, 1, 1, 2
    assert terciles([1.0, 2.0, 2.0, 3.0]).tolist() == [0, 1, 1, 2]
    assert terciles([]).size == 0
    values = np.round(np.random.default_rng(3).random(101), 1).tolist()  # many ties
    assert terciles(values).tolist() == _loop_terciles(values)
    sizes = np.bincount(terciles(np.random.default_rng(4).random(100)), minlength=3)
    assert sorted(sizes.tolist()) == [33, 33, 34]
    with pytest.raises(ValueError):
        terciles([0.1, float("nan")])


def test_ece_interval_against_calibration_netcal_and_a_bootstrap_loop():
    conf, correct, _ = _random(0, 150)
    value, (lo, hi) = ece_interval(conf, correct, n_boot=300, seed=5)
    np.testing.assert_allclose(value, ece(conf, correct), rtol=0, atol=1e-12)
    # netcal bins as [lo, hi): random confidences sit on no interior edge, so the bins agree
    assert not np.isin(conf, bin_edges(conf, 15)[1:-1]).any()
    np.testing.assert_allclose(value, ECE(bins=15).measure(conf, correct.astype(int)), rtol=0, atol=1e-9)
    # the same resamples, drawn as one block (300 × 150 entries), recomputed one by one
    idx = np.random.default_rng(5).integers(0, conf.size, size=(300, conf.size))
    boots = [ece(conf[i], correct[i]) for i in idx]
    np.testing.assert_allclose([lo, hi], np.quantile(boots, [0.025, 0.975]), rtol=0, atol=1e-12)
    assert ece_interval([], []) == (None, (None, None))
    assert ece_interval(conf, correct, n_boot=0)[1] == (None, None)


def test_confident_error_rate_by_hand_and_its_interval():
    conf = [0.95, 0.85, 0.8, 0.79, 0.5, 0.99]
    correct = [1, 0, 0, 0, 1, 1]
    rate, _, n_conf = confident_error_rate(conf, correct, n_boot=0)
    assert n_conf == 4  # 0.95, 0.85, 0.8 (≥ 0.8 counts), 0.99; the 0.79 error is not confident
    assert rate == pytest.approx(2 / 4)
    assert confident_error_rate([0.5, 0.6], [0, 1]) == (None, (None, None), 0)
    c, y, _ = _random(1, 80)
    rate, (lo, hi), n_conf = confident_error_rate(c, y, n_boot=200, seed=2)
    idx = np.random.default_rng(2).integers(0, c.size, size=(200, c.size))
    boots = [np.mean(1 - y[i][c[i] >= 0.8]) for i in idx if (c[i] >= 0.8).any()]
    np.testing.assert_allclose([lo, hi], np.quantile(boots, [0.025, 0.975]), rtol=0, atol=1e-12)
    assert rate == pytest.approx(np.mean(1 - y[c >= 0.8])) and n_conf == int((c >= 0.8).sum())


def test_by_group_matches_a_loop_over_terciles():
    conf, correct, sharpness = _random(2, 90)
    groups = terciles(sharpness)
    ece_cells, error_cells = by_group(conf, correct, sharpness, groups, n_boot=50, seed=0)
    for k in range(3):
        members = [i for i in range(90) if groups[i] == k]
        c, y = conf[members], correct[members]
        assert ece_cells[k]["n"] == error_cells[k]["n"] == len(members) == 30
        np.testing.assert_allclose(ece_cells[k]["value"], ece(c, y), rtol=0, atol=1e-12)
        confident = [j for j in range(len(c)) if c[j] >= 0.8]
        assert error_cells[k]["n_confident"] == len(confident)
        expected = sum(1 - y[j] for j in confident) / len(confident)
        np.testing.assert_allclose(error_cells[k]["value"], expected, rtol=0, atol=1e-12)
        assert ece_cells[k]["range"] == [min(sharpness[members]), max(sharpness[members])]
        assert ece_cells[k]["ci"][0] <= ece_cells[k]["value"] <= ece_cells[k]["ci"][1]
    assert [c["label"] for c in ece_cells] == ["sharpest", "middle", "least sharp"]


def test_error_among_by_hand():
    out = error_among([1, 0, 0, 1, 1], [True, True, True, False, False], n_boot=0)
    assert out == {"value": pytest.approx(2 / 3), "ci": [None, None], "n": 3}
    assert error_among([1, 0], [False, False]) == {"value": None, "ci": [None, None], "n": 0}


def _records(n: int = 60, seed: int = 0, boxes: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        on = float(rng.random())
        correct = float(rng.random() < 0.3 + 0.6 * on)
        r = {
            "model": "m",
            "data": "d",
            "index": i,
            "sample_id": f"s{i}",
            "predicted": "yes",
            "confidence": float(rng.uniform(0.5, 1.0)),
            "correct": correct,
            "sharpness_norm": float(rng.random()),
        }
        if boxes and i % 4:  # every fourth sample has no target, as POPE's "no" questions
            r |= {
                "attention_on_target": on,
                "attention_lift": on / 0.25,
                "pointing_hit": float(on > 0.5),
                "attention_on_target_by_layer": [on, 1 - on],
                "attention_on_target_by_head": [[on, 0.2], [0.1, 1 - on]],
                "attention_image": [0.25] * 4,
                "image_grid": [2, 2],
                "boxes": [[0.0, 0.0, 1.0, 1.0]],
                "image_size": [2, 2],
            }
        out.append(r)
    return out


def test_grounded_stats_against_independent_references():
    recs = _records()
    out = grounded_stats(recs, [], n_boot=200, seed=0)
    g = [r for r in recs if "attention_on_target" in r]
    on = np.array([r["attention_on_target"] for r in g])
    correct = np.array([r["correct"] for r in g])
    over = np.clip(np.array([r["confidence"] for r in g]) - correct, 0, None)
    assert out["n_grounded"] == len(g) == 45
    assert out["r_on_target_correct"]["r"] == pytest.approx(stats.pointbiserialr(correct, on).statistic, abs=1e-12)
    assert out["r_on_target_overconfidence"]["r"] == pytest.approx(stats.pearsonr(on, over).statistic, abs=1e-12)
    assert out["auroc_on_target"]["value"] == pytest.approx(roc_auc_score(correct, on), abs=1e-12)
    lo, hi = out["auroc_on_target"]["ci"]
    assert lo <= out["auroc_on_target"]["value"] <= hi
    assert out["pointing_accuracy"]["value"] == pytest.approx(np.mean([r["pointing_hit"] for r in g]))
    # looks right: sharpest tercile over ALL the row's samples (the loop's), then with boxes and pointing_hit 1
    tercile = _loop_terciles([r["sharpness_norm"] for r in recs])
    chosen = [r for r, t in zip(recs, tercile, strict=True) if t == 0 and r.get("pointing_hit") == 1.0]
    looks = out["looks_right_wrong"]
    assert looks["n"] == len(chosen) > 0
    assert looks["error_rate"] == pytest.approx(np.mean([1 - r["correct"] for r in chosen]))
    assert looks["overall_error_rate"] == pytest.approx(1 - correct.mean()) and looks["overall_n"] == 45
    assert out["heads_on_target"] == []
    assert grounded_stats(_records(boxes=False), [], n_boot=50, seed=0) == {}


def test_heads_on_target_uses_the_heads_that_predict_correctness():
    recs = [r for r in _records() if "attention_on_target" in r]
    cells = [
        {"layer": 0, "head": 0, "r_correct": 0.3, "q_correct": 0.01},  # predicts: its on-target is `on`
        {"layer": 1, "head": 1, "r_correct": -0.3, "q_correct": 0.01},  # goes with errors: left out
        {"layer": 1, "head": 0, "r_correct": 0.3, "q_correct": 0.2},  # not significant: left out
        {"layer": 1, "head": "mean", "r_correct": 0.2, "q_correct": 0.04},  # layer 1's mean: 1 - on
        {"layer": 0, "head": 1, "r_correct": None, "q_correct": None},
    ]
    out = heads_on_target(recs, cells, 0.05, n_boot=100, seed=0)
    correct = np.array([r["correct"] for r in recs])
    on = np.array([r["attention_on_target"] for r in recs])
    assert [(h["layer"], h["head"]) for h in out] == [(0, 0), (1, "mean")]
    assert out[0]["r"] == pytest.approx(stats.pointbiserialr(correct, on).statistic, abs=1e-12)
    assert out[1]["r"] == pytest.approx(-out[0]["r"], abs=1e-12)  # 1 − on: the same r, sign flipped


def test_sharpness_bins_cover_every_sample():
    recs = _records(boxes=False)
    out = sharpness_bins(recs, n_boot=50, seed=0)
    assert [c["n"] for c in out["ece_by_sharpness"]] == [20, 20, 20]
    assert sum(c["n_confident"] for c in out["confident_error_rate_by_sharpness"]) == sum(
        r["confidence"] >= 0.8 for r in recs
    )


def _correlation(r: float | None, lo: float | None, hi: float | None, p: float | None) -> dict:
    return {"r": r, "ci": [lo, hi], "p": p, "n": 50}


@pytest.mark.parametrize(
    ("corr", "status"),
    [
        (_correlation(0.3, 0.1, 0.5, 0.001), "supported"),
        (_correlation(0.3, 0.1, 0.5, 0.2), "not resolved"),  # CI above 0 but p ≥ ALPHA
        (_correlation(-0.3, -0.5, -0.1, 0.001), "contradicted"),
        (_correlation(0.1, -0.1, 0.3, 0.3), "not resolved"),
        (_correlation(None, None, None, None), "not resolved"),
    ],
)
def test_verdict_halves_follow_the_rule(corr, status):
    both = answer_verdict({"r_sharpness_accuracy": corr, "r_on_target_correct": corr})
    assert both["sharpness_predicts_reliability"]["status"] == status
    assert both["looking_right_predicts_reliability"] == {**both["sharpness_predicts_reliability"]} | {
        "from": "r_on_target_correct"
    }
    assert both["sharpness_predicts_reliability"]["r"] == corr["r"]
    assert "looking_right_predicts_reliability" not in answer_verdict({"r_sharpness_accuracy": corr})


def test_choose_examples_is_deterministic_by_confidence_then_index():
    base = {"attention_on_target": 0.5, "attention_image": [1.0], "image_grid": [1, 1]}
    recs = [
        {"index": 0, "confidence": 0.9, "correct": 1.0, "pointing_hit": 1.0, **base},
        {"index": 1, "confidence": 0.95, "correct": 1.0, "pointing_hit": 0.0, **base},
        {"index": 2, "confidence": 0.9, "correct": 1.0, "pointing_hit": 1.0, **base},  # ties index 0: after it
        {"index": 3, "confidence": 0.99, "correct": 0.0, "pointing_hit": 1.0, **base},
        {"index": 4, "confidence": 0.7, "correct": 0.0, "pointing_hit": 0.0, **base},  # not confident
        {"index": 5, "confidence": 0.99, "correct": 0.0, "pointing_hit": 0.0},  # no boxes
    ]
    chosen = [(kind, r["index"]) for kind, r in choose_examples(recs)]
    assert chosen == [("confident_right", 1), ("confident_right", 0), ("confident_wrong_on_target", 3)]


def test_example_png_downscales_to_256_and_keeps_small_images():
    big = example_png(Image.new("RGB", (1000, 400), (10, 20, 30)))
    small = example_png(Image.new("RGB", (64, 64), (10, 20, 30)))
    with Image.open(io.BytesIO(big)) as im:
        assert im.size == (256, 102) and im.format == "PNG"
    with Image.open(io.BytesIO(small)) as im:
        assert im.size == (64, 64)


def test_pope_row_metrics_by_hand():
    samples = [
        Sample(id=f"p{i}", question="Is there a dog?", answers=(a,), meta={"benchmark": "pope"})
        for i, a in enumerate(("yes", "yes", "no", "no", "yes"))
    ]
    predicted = ["yes", "no", "yes", "no", "yes"]  # TP 2, FN 1, FP 1, TN 1
    recs = [{"index": i, "predicted": p} for i, p in enumerate(predicted)]
    out = pope_stats(recs, Dataset("pope:x:random", samples))
    assert out == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 3 / 5})
    plain = [replace(s, meta={}) for s in samples]
    assert pope_stats(recs, Dataset("easy-vqa:test", plain)) == {}


def test_write_bytes_is_atomic_and_stays_inside(tmp_path):
    run = RunDir(tmp_path / "run", {"command": "t"})
    run.write_bytes("examples/a.png", b"123")
    assert (tmp_path / "run" / "examples" / "a.png").read_bytes() == b"123"
    assert not [p for p in (tmp_path / "run" / "examples").iterdir() if p.name != "a.png"]  # no temporary left
    for bad in ("../x.png", "/tmp/x.png", ""):
        with pytest.raises(ValueError):
            run.write_bytes(bad, b"1")


def _finite(x: object) -> bool:
    return isinstance(x, float | int) and math.isfinite(x)


def test_real_study_on_llava_with_and_without_boxes(tmp_path):
    boxed = load_dataset("easy-vqa:test", limit=24, seed=0)
    assert all(s.boxes for s in boxed.samples)  # easy-VQA's boxes, from the pixels
    shifted = load_dataset("easy-vqa:test?noise=0.2", limit=24, seed=0)
    plain = Dataset(shifted.spec, [replace(s, boxes=None) for s in shifted.samples])  # a copy without boxes
    cfg = StudyConfig(
        models=("zoo:llava",),
        data=(boxed.spec, plain.spec),
        limit=24,
        trace_limit=4,
        probe_limit=40,
        n_boot=200,
    )
    run = RunDir(tmp_path / "run", {"command": "study-test"})
    res = run_study(cfg, run, loaded_data={plain.spec: plain})
    with_boxes, without = res.table
    for row in res.table:
        for key in ALWAYS:
            assert key in row, key
        assert _finite(row["r_sharpness_confidence"]["r"])
        assert [c["n"] for c in row["ece_by_sharpness"]] == [8, 8, 8]
        assert all(_finite(c["value"]) for c in row["ece_by_sharpness"])
        assert "sharpness_predicts_reliability" in row["verdict"]
        assert "belief_sharp_attention_means_reliable" in row["verdict"]  # the existing keys stay
    for key in GROUNDED:
        assert key in with_boxes, key
        assert key not in without, key
    assert "looking_right_predicts_reliability" in with_boxes["verdict"]
    assert "looking_right_predicts_reliability" not in without["verdict"]
    assert with_boxes["n_grounded"] == 24
    assert _finite(with_boxes["pointing_accuracy"]["value"]) and _finite(with_boxes["mean_attention_lift"]["value"])
    assert _finite(with_boxes["looks_right_wrong"]["overall_error_rate"])
    status = with_boxes["verdict"]["looking_right_predicts_reliability"]["status"]
    assert status in ("supported", "contradicted", "not resolved")
    assert set(DEFINITIONS) >= {*ALWAYS, *GROUNDED[1:], "looks_right_wrong"}
    # records: grounded keys passed through only where the sample has boxes, and they survive Parquet
    stored = read_records(run.path)
    assert all(_finite(r["attention_on_target"]) for r in stored if r["data"] == boxed.spec)
    assert all(r.get("attention_on_target") is None for r in stored if r["data"] == plain.spec)
    # examples: only for the dataset with boxes, written, readable, ≤ 256 px, as the summary says
    examples = res.summary["examples"]
    assert set(examples) <= {f"zoo:llava · {boxed.spec}"}
    entries = [e for es in examples.values() for e in es]
    assert entries, "the zoo model answers some easy-VQA questions confidently"
    for e in entries:
        assert e["kind"] in EXAMPLE_KINDS and e["confidence"] >= 0.8
        with Image.open(run.path / e["image"]) as im:
            assert max(im.size) <= 256 and im.size == tuple(e["image_size"])  # easy-VQA's 64 px: kept as it is
        rows, cols = e["image_grid"]
        assert len(e["attention_image"]) == rows * cols and e["boxes"]
    # resuming reads everything back from the run directory and chooses the same examples
    again = run_study(cfg, RunDir(tmp_path / "run", {"command": "study-test"}), loaded_data={plain.spec: plain})
    assert again.summary["examples"] == examples
