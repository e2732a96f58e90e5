"""`vrprobe attribute`: attribution rows like trace's, the comparison with the exact trace, one-line errors."""

from __future__ import annotations

import json

import pytest
from scipy.stats import spearmanr

from vrprobe.runtime.runs import read_records

from conftest import run_cli


def test_attribute_writes_estimates_and_compares_with_the_exact_trace(tmp_path):
    out = tmp_path / "atp"
    args = ["--model", "zoo:qwen2vl", "--data", "easy-vqa:test", "--limit", "3", "--noise-samples", "3"]
    r = run_cli("attribute", *args, "--compare-trace", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_records(out, "traces")
    assert len(rows) == 3 * 3 * 8 * 3 and {"estimate", "effect", "kind", "layer", "group"} <= set(rows[0])
    s = json.loads((out / "summary.json").read_text())
    assert len(s["per_sample"]) == 3 and s["cost_ratio"] >= s["cost_ratio_with_linear"] > 0
    for c in s["per_sample"]:  # each sample's Spearman, recomputed here from the written rows
        mine = [x for x in rows if x["sample_id"] == c["sample_id"]]
        rho = spearmanr([x["effect"] for x in mine], [x["estimate"] for x in mine]).statistic
        assert c["spearman"] == pytest.approx(rho, abs=1e-9)
    assert s["spearman"] == pytest.approx(sum(c["spearman"] for c in s["per_sample"]) / 3)
    again = run_cli("attribute", *args, "--compare-trace", "--out", str(out))  # resumes: nothing recomputed
    assert again.returncode == 0 and len(read_records(out, "traces")) == len(rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--kinds", "resid,foo"], "unknown restoration kind"), (["--noise-samples", "0"], "--noise-samples")],
)
def test_attribute_bad_inputs(tmp_path, extra, message):
    out = tmp_path / "bad"
    r = run_cli(
        "attribute", "--model", "zoo:llava", "--data", "easy-vqa:test", "--limit", "2", *extra, "--out", str(out)
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()
