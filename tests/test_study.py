"""The study end to end on a small subset of all three zoo models, through the CLI."""

from __future__ import annotations

import json

import pytest
from sklearn.metrics import roc_auc_score

from vrprobe.runtime.runs import read_records

from conftest import run_cli

TABLE_FIELDS = (
    "model",
    "family",
    "params",
    "n",
    "accuracy",
    "ece",
    "mce",
    "brier",
    "r_sharpness_accuracy",
    "r_sharpness_overconfidence",
    "band",
    "drop_abs",
    "drop_rel",
    "sharpness_clean",
    "sharpness_corrupted",
)
RECORD_FIELDS = (
    "model",
    "sample_id",
    "question_type",
    "predicted",
    "confidence",
    "correct",
    "overconfidence",
    "sharpness",
    "sharpness_norm",
)


@pytest.mark.slow
def test_study_end_to_end_all_zoo_models(tmp_path):
    out = tmp_path / "study"
    res = run_cli(
        "study",
        "--models",
        "zoo:llava,zoo:paligemma,zoo:qwen2vl",
        "--data",
        "easy-vqa:test,easy-vqa:test?noise=0.3",
        "--limit",
        "60",
        "--trace-limit",
        "4",
        "--probe-limit",
        "300",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "r(sharp, acc)" in res.stdout and "belief" in res.stdout and "reliability signals" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    table = summary["table"]
    assert len(table) == 6
    for row in table:
        for field in TABLE_FIELDS:
            assert field in row, field
        for key in ("r_sharpness_accuracy", "r_sharpness_overconfidence"):
            assert set(row[key]) >= {"r", "ci", "p"} and len(row[key]["ci"]) == 2
        assert row["n"] == 60 and len(row["band"]) == 2
        assert row["drop_abs"] == pytest.approx(row["accuracy"] - (row["accuracy"] - row["drop_abs"]))
        assert row["verdict"]["belief_sharp_attention_means_reliable"]
    clean_rows = [r for r in table if "?" not in r["data"]]
    shifted = [r for r in table if "?" in r["data"]]
    assert [r["band"] for r in clean_rows] == [r["band"] for r in shifted]  # band found once per model
    assert set(summary["definitions"]) >= {"confidence", "sharpness", "overconfidence"}
    rows = read_records(out)
    assert set(RECORD_FIELDS) <= set(rows[0]) and len(rows) == 6 * 60
    for row in table:
        mine = [r for r in rows if r["model"] == row["model"] and r["data"] == row["data"]]
        assert row["accuracy"] == pytest.approx(sum(r["correct"] for r in mine) / len(mine))
        # reliability signals: recomputed here with scikit-learn from the records (the probe's training samples are
        # easy-VQA train, so every test record is held out)
        assert not any(r["probe_train"] for r in mine) and row["n_held_out"] == 60
        correct = [r["correct"] for r in mine]
        if 0 < sum(correct) < len(correct):
            assert row["auroc_confidence"] == pytest.approx(roc_auc_score(correct, [r["confidence"] for r in mine]))
            assert row["auroc_sharpness"] == pytest.approx(roc_auc_score(correct, [-r["sharpness"] for r in mine]))
            assert row["auroc_probe"] == pytest.approx(roc_auc_score(correct, [r["reliability"] for r in mine]))
            lo, hi = row["auroc_probe_ci"]
            assert lo <= row["auroc_probe"] <= hi
        assert row["probe_layer"] == summary["probes"][row["model"]]["layer"]
        assert {"most_reliable_signal", "probe_beats_confidence"} <= set(row["verdict"])
        # issue 14: integration layers beside the band, the band's rank in its sweep, per-head sharpness
        assert set(row["integration_layers"]) == {"image->question", "image->last"}
        sweep = summary["band_sweep"][row["model"]]
        assert row["band_rank"] == 1 + sum(
            b["drop_abs"] > d
            for b in sweep["bands"]
            for d in [next(x["drop_abs"] for x in sweep["bands"] if x["band"] == row["band"])]
        )
        heads = summary["heads"][f"{row['model']} · {row['data']}"]
        assert {c["head"] for c in heads} >= {0, "mean"} and row["head_sharpness"]["n_tests"] <= len(heads)
        assert {"causal_band_special", "heads_predicting_correctness"} <= set(row["verdict"])
    for model, ko in summary["knockout"].items():
        assert {w["edge"] for w in ko["windows"]} == {"image->question", "image->last", "question->last", "last->last"}
        assert all({"band", "accuracy", "drop_abs"} <= set(b) for b in summary["band_sweep"][model]["bands"])
