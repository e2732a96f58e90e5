"""VQA v2, OK-VQA and ScienceQA from local files (official layouts and parquet exports), end to end on zoo models."""

from __future__ import annotations

import json

import pytest

from vrprobe.data.answers import binary_correct, vqa_accuracy
from vrprobe.runtime.runs import read_records

from conftest import run_cli
from fixtures import write_okvqa, write_parquet, write_scienceqa, write_vqav2

WRITERS = {"vqav2": write_vqav2, "okvqa": write_okvqa, "scienceqa": write_scienceqa}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vqav2", "okvqa", "scienceqa", "vqav2-parquet", "scienceqa-parquet"])
def test_eval_through_each_loader(tmp_path, kind):
    name = kind.split("-")[0]
    root = write_parquet(tmp_path / kind, name) if kind.endswith("parquet") else WRITERS[name](tmp_path / kind)
    out = tmp_path / "run"
    res = run_cli(
        "eval",
        "--model",
        "zoo:qwen2vl",
        "--data",
        f"{name}:{root}",
        "--out",
        str(out),
        "--max-new-tokens",
        "5",
        "--batch-size",
        "4",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    records = read_records(out)
    assert summary["n"] == len(records) > 0
    assert summary["accuracy"] == pytest.approx(sum(r["accuracy"] for r in records) / len(records))
    for r in records:
        assert 0 <= r["confidence"] <= 1 and "sharpness" in r
        if name == "scienceqa":  # multiple choice: the letters are the candidates
            assert r["predicted"] in r["choices"] and r["choices"][0] == "A"
            assert r["confidence"] == max(r["probs"])
        else:  # open-ended: generated answer, sequence probability, official VQA accuracy
            assert r["accuracy"] == pytest.approx(vqa_accuracy(r["predicted"], r["answers"]))
            assert r["correct"] == binary_correct(r["accuracy"])
            assert r["confidence"] <= r["first_token_prob"] + 1e-12
            assert len(r["answers"]) == 10


@pytest.mark.slow
def test_small_study_on_each_benchmark(tmp_path):
    data = ",".join(f"{k}:{w(tmp_path / k)}" for k, w in WRITERS.items())
    out = tmp_path / "study"
    res = run_cli(
        "study",
        "--models",
        "zoo:llava,zoo:paligemma",
        "--data",
        data,
        "--trace-limit",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    table = json.loads((out / "summary.json").read_text())["table"]
    assert len(table) == 2 * 3
    for row in table:
        assert row["n"] > 0 and 0 <= row["accuracy"] <= 1 and len(row["band"]) == 2
    assert (out / "report.html").is_file()
