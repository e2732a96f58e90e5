"""`vrprobe compare` end to end on a zoo model (every signal on the same held-out samples, one table), its option
errors, its report figure, and the loop's handling of signals that need what the data lacks."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vrprobe.analyses.compare import plan, run_signals, signal_row
from vrprobe.analyses.signals import MODULES
from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet
from vrprobe.data import load_dataset
from vrprobe.runtime.runs import read_records

from conftest import run_cli

ROW_KEYS = {
    "signal",
    "column",
    "n",
    "auroc",
    "auroc_ci",
    "aurc",
    "forwards",
    "backwards",
    "seconds",
    "needs_labels",
    "causal",
    "granularity",
    "higher_is_reliable",
    "note",
}
ARGS = ("--model", "zoo:llava", "--data", "easy-vqa:train", "--train-limit", "200", "--samples", "3")
EVAL = ("--eval-data", "easy-vqa:test", "--limit", "40")
DECLARED = {s.name: s for module in MODULES for s in module.SIGNALS}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A compare run of every signal: (run directory, the command's result)."""
    out = tmp_path_factory.mktemp("compare") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "120")
        res = run_cli("compare", *ARGS, *EVAL, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out, res


def test_compare_writes_one_row_per_signal_on_the_eval_samples(compared):
    out, res = compared
    summary = json.loads((out / "summary.json").read_text())
    table = summary["table"]
    assert [row["signal"] for row in table] == list(DECLARED)
    records = read_records(out)
    eval_ids = [s.id for s in load_dataset("easy-vqa:test", limit=40, seed=0).samples]
    train_ids = {s.id for s in load_dataset("easy-vqa:train", limit=200, seed=0).samples}
    assert sorted(r["sample_id"] for r in records) == sorted(eval_ids) and not train_ids & set(eval_ids)
    assert summary["n"] == 40 and summary["n_train"] == 200 and summary["clean_seconds_per_sample"] > 0
    correct = np.array([r["correct"] for r in records], dtype=float)
    for row in table:
        signal = DECLARED[row["signal"]]
        assert set(row) == ROW_KEYS
        assert (row["column"], row["forwards"], row["backwards"]) == (signal.column, signal.forwards, signal.backwards)
        assert (row["needs_labels"], row["causal"], row["granularity"]) == (
            signal.needs_labels,
            signal.causal,
            signal.granularity,
        )
        assert row["signal"] in summary["definitions"]
        values = np.array([np.nan if r[row["column"]] is None else r[row["column"]] for r in records], dtype=float)
        keep = np.isfinite(values)
        assert row["n"] == int(keep.sum())
        if row["auroc"] is None:
            assert row["note"]
            continue
        oriented = values[keep] if signal.higher_is_reliable else -values[keep]
        assert row["auroc"] == pytest.approx(roc_auc_score(correct[keep], oriented), abs=1e-12)
        lo, hi = row["auroc_ci"]
        assert lo <= row["auroc"] <= hi and row["seconds"] >= 0 and row["aurc"] >= 0
    rows = {row["signal"]: row for row in table}
    assert rows["probe"]["needs_labels"] and rows["probe"]["column"] == "reliability"
    assert rows["attention on target"]["note"] == "needs target boxes (40 of 40 have them)"
    # printed: ranked by AUROC, within the 120 columns, then the report's path
    lines = res.stdout.splitlines()
    assert max(map(len, lines)) <= 120
    shown = list(dict.fromkeys(name for line in lines for name in DECLARED if line.startswith(name + "  ")))
    ranked = sorted(table, key=lambda row: -row["auroc"] if row["auroc"] is not None else math.inf)
    assert shown == [row["signal"] for row in ranked]
    assert lines[-1].startswith("report: ")


def test_compare_resumes_a_finished_run_without_recomputing(compared):
    out, _ = compared
    before = (out / "summary.json").read_text()
    again = run_cli("compare", *ARGS, *EVAL, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert (out / "summary.json").read_text() == before and len(read_records(out)) == 40
    shown = run_cli("show", str(out))
    assert shown.returncode == 0 and "AUROC" in shown.stdout and "probe" in shown.stdout


def test_report_draws_the_comparison(compared):
    out, _ = compared
    html = (out / "report.html").read_text()
    assert 'data-plot="signals compared: AUROC against cost"' in html
    table = html[html.index('id="comparison-table"') :]
    table = table[: table.index("</table>")]
    assert all(f'<td class="l">{name}</td>' in table for name in DECLARED)


def test_compare_runs_a_subset_of_signals(tmp_path):
    out = tmp_path / "subset"
    res = run_cli("compare", *ARGS, *EVAL, "--signals", "probe, confidence", "--out", str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [row["signal"] for row in summary["table"]] == ["confidence", "probe"]
    assert summary["signals"] == ["confidence", "probe"]
    assert "reliability" in read_records(out)[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--signals", "confidence,nope", *EVAL], "unknown signal 'nope' (known: confidence, margin"),
        (["--signals", " , ", *EVAL], "--signals needs at least one signal name"),
        (["--samples", "0", *EVAL], "--samples must be an integer >= 1, got 0"),
        (["--train-limit", "0", *EVAL], "--train-limit must be an integer >= 1, got 0"),
        (["--temperature", "0", *EVAL], "--temperature must be a finite number > 0, got 0"),
        (["--cluster-eps", "nan", *EVAL], "--cluster-eps must be a finite number > 0, got nan"),
        (["--cluster-percentile", "101", *EVAL], "--cluster-percentile must be a number in [0, 100], got 101"),
        (["--cluster-min-samples", "0", *EVAL], "--cluster-min-samples must be an integer >= 1, got 0"),
        (["--limit", "40"], "Missing option '--eval-data'"),
        (["--eval-data", "easy-vqa:train", "--limit", "40"], "held out"),
    ],
)
def test_compare_bad_options_fail_with_one_line_and_write_nothing(tmp_path, extra, message):
    out = tmp_path / "bad"
    res = run_cli("compare", *ARGS, *extra, "--out", str(out))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not out.exists()


class Boxed:
    """A signal module whose one signal needs target boxes; calling it on data without boxes is a bug."""

    SIGNALS = (Signal("boxed", "boxed", "a value per boxed sample", higher_is_reliable=True, requires=("boxes",)),)

    def compute(self, adapter, samples, records, options, train):
        raise AssertionError("a module whose signals cannot run is not called")


class Sampled:
    """A signal module drawing several answers per sample; the first sample has no value."""

    SIGNALS = (
        Signal("agree", "agreement", "agreement", higher_is_reliable=False, forwards=3.0, granularity="sample set"),
    )

    def compute(self, adapter, samples, records, options, train):
        return [{"agreement": math.nan if i == 0 else float(i % 3)} for i in range(len(samples))]


def test_signals_that_need_missing_boxes_or_samples_say_so():
    samples = [replace(s, boxes=None) for s in load_dataset("easy-vqa:test", limit=6, seed=0).samples]
    correct = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    records = [{"correct": c} for c in correct]
    modules = [Boxed(), Sampled()]
    planned = plan(None, modules)
    options = SignalOptions(samples=4)
    values, seconds = run_signals(None, samples, records, planned, options, TrainSet([], []))
    assert seconds["boxed"] is None and all(math.isnan(v["boxed"]) for v in values)
    boxed = signal_row(modules[0].SIGNALS[0], [v["boxed"] for v in values], correct, None, 0, options)
    assert boxed["auroc"] is None and boxed["n"] == 0 and boxed["auroc_ci"] == [None, None]
    assert boxed["note"] == "needs target boxes (none of the 6 eval samples has them)"
    signal = modules[1].SIGNALS[0]
    agree = signal_row(signal, [v["agreement"] for v in values], correct, seconds["agree"], 0, options)
    assert agree["n"] == 5 and agree["forwards"] == 3.0
    assert (
        agree["note"] == "draws 4 sampled answers per sample (--samples); 1 of 6 samples have no value and are left out"
    )
    x = -np.array([v["agreement"] for v in values][1:])  # an entropy-like signal: ranked by its negative
    assert agree["auroc"] == pytest.approx(roc_auc_score(correct[1:], x))
    with pytest.raises(Exception, match="unknown signal 'confidence' \\(known: boxed, agree;"):
        plan("confidence", modules)
    assert [s.name for p in plan(["agreement", "boxed"], modules) for s in p.signals] == ["boxed", "agree"]
