"""The study end to end on a small subset of all three zoo models, through the CLI."""

from __future__ import annotations

import json

import pytest

from vrprobe.runs import read_records

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
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "r(sharp, acc)" in res.stdout and "belief" in res.stdout
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
