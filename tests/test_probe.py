"""Hidden-state reliability probes on a real zoo model: features, the estimator, no leakage, the `probe` command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vrprobe
from vrprobe.analyses.probe import ReliabilityProbe, features
from vrprobe.analyses.proxies import collect
from vrprobe.data import load_dataset
from vrprobe.errors import UsageError
from vrprobe.interventions import Site, intervene
from vrprobe.metrics.selective import auroc, auroc_interval
from vrprobe.registry import load_adapter
from vrprobe.runtime.runs import read_records
from vrprobe.scoring.evaluate import score_batch

from conftest import run_cli
from numerics import FORWARD, assert_close


@pytest.fixture(scope="module")
def llava():
    return load_adapter("zoo:llava")


def test_features_are_the_answer_position_and_image_mean_of_each_layer(llava):
    samples = load_dataset("easy-vqa:test", limit=6, seed=0).samples
    records = score_batch(llava, samples, hidden=True)
    batch = llava.encode_samples(samples)
    site = Site("resid", tuple(range(llava.num_layers)), "all")
    with torch.no_grad(), intervene(llava, batch.groups, record=[site]) as rec:
        llava.forward(batch, use_cache=False)
    states = rec.stacked(site)  # [L, B, T, D]
    for i, r in enumerate(records):
        assert_close(r["hidden_last"], states[:, i, -1], dtype=torch.float32, ulps=FORWARD, what="hidden_last")
        image = batch.groups.image[i]
        mean = states[:, i][:, image].mean(1)
        assert_close(r["hidden_image_mean"], mean, dtype=torch.float32, ulps=FORWARD, what="hidden_image_mean")


def test_probe_finds_the_layer_that_carries_the_signal():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4, 16))
    y = (X[:, 2, :3].sum(1) + 0.5 * rng.normal(size=400) > 0).astype(float)
    probe = ReliabilityProbe(seed=0).fit(X[:300], y[:300])
    assert probe.best_layer_ == 2
    assert auroc(probe.predict_proba(X[300:]), y[300:]) > 0.9
    assert probe.fits_[2].cv_auroc > max(probe.fits_[k].cv_auroc for k in (0, 1, 3))


def test_shuffled_labels_leave_the_held_out_auroc_at_chance(llava):
    """Trained on permuted labels, the probe must score chance on held-out data: an interval containing 0.5."""
    train = collect(llava, load_dataset("easy-vqa:train", limit=400, seed=0).samples, 64, None, "train")
    test = collect(llava, load_dataset("easy-vqa:test", limit=400, seed=0).samples, 64, None, "test")
    y = np.array([r["correct"] for r in train])
    shuffled = np.random.default_rng(0).permutation(y)
    probe = ReliabilityProbe(seed=0).fit(features(train, "last"), shuffled)
    correct = np.array([r["correct"] for r in test])
    lo, hi = auroc_interval(probe.predict_proba(features(test, "last")), correct, seed=0)
    assert lo < 0.5 < hi


def test_estimator_errors():
    X = np.zeros((10, 2, 3))
    with pytest.raises(UsageError, match="2 training samples of each class"):
        ReliabilityProbe().fit(X, np.ones(10))
    with pytest.raises(UsageError, match="out of range"):
        ReliabilityProbe(layers=[5]).fit(np.random.default_rng(0).normal(size=(10, 2, 3)), np.arange(10) % 2)
    with pytest.raises(UsageError, match="not fitted"):
        ReliabilityProbe().predict_proba(X)


@pytest.mark.slow
def test_probe_command_writes_summary_and_records(tmp_path):
    out = tmp_path / "probe"
    args = ["--model", "zoo:llava", "--data", "easy-vqa:train", "--limit", "300", "--layers", "2-4"]
    r = run_cli("probe", *args, "--eval-data", "easy-vqa:test,easy-vqa:test?noise=0.3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["best_layer"] in (2, 3, 4)
    assert {(e["signal"], e["layer"]) for e in s["auroc"]} >= {("probe", k) for k in (2, 3, 4)}
    assert all(set(e) == {"signal", "layer", "auroc", "ci"} for e in s["auroc"])
    for key in ("auroc_confidence", "auroc_probe"):
        assert 0 <= s[key] <= 1 and s[f"{key}_ci"][0] <= s[key] <= s[f"{key}_ci"][1]
    assert set(s["evaluations"]) == {"easy-vqa:test", "easy-vqa:test?noise=0.3"}
    records = read_records(out)
    assert len(records) == 600
    assert {"sample_id", "correct", "confidence", "reliability", "reliability_label_free"} <= set(records[0])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eval-data", "easy-vqa:test", "--layers", "9"], "out of range"),
        (["--eval-data", "easy-vqa:test", "--layers", "a-b"], "--layers"),
        (["--eval-data", "easy-vqa:train"], "held out"),
        (["--eval-data", ""], "--eval-data"),
    ],
)
def test_probe_command_bad_inputs(tmp_path, extra, message):
    out = tmp_path / "bad"
    r = run_cli("probe", "--model", "zoo:llava", "--data", "easy-vqa:train", "--limit", "60", *extra, "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (out / "summary.json").exists()


def test_probe_report_says_whether_the_calibrated_score_transfers(tmp_path):
    specs = ["easy-vqa:test", "easy-vqa:test?occlude=0.25"]
    run = vrprobe.probe("zoo:llava", "easy-vqa:train", specs, out=tmp_path / "probe", limit=100, layers=[2, 3])
    s = json.loads((run.out / "summary.json").read_text())
    for ev in s["evaluations"].values():
        for key in ("auroc_reliability", "ece_reliability", "ece_reliability_raw", "ece_confidence"):
            lo, hi = ev[f"{key}_ci"]
            assert 0 <= lo <= hi <= 1 and 0 <= ev[key] <= 1, key
    assert s["ece_reliability_ci"] == s["evaluations"][specs[0]]["ece_reliability_ci"]
    html = Path(vrprobe.report(run.out)).read_text()
    table = html[html.index('<table id="transfer-table"') :]
    table = table[: table.index("</table>")]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]
    assert [r[0] for r in rows] == ["easy-vqa:test (test)", "easy-vqa:test?occlude=0.25 (transfer)"]

    def interval(value, ci):
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    for row, spec in zip(rows, specs, strict=True):
        ev = s["evaluations"][spec]
        conf = ev["selective"]["confidence"]
        assert row[1:] == [
            str(ev["n"]),
            f"{ev['accuracy']:#.3g}",
            interval(ev["auroc_reliability"], ev["auroc_reliability_ci"]),
            interval(conf["auroc"], conf["ci"]),
            interval(ev["ece_reliability"], ev["ece_reliability_ci"]),
            interval(ev["ece_confidence"], ev["ece_confidence_ci"]),
        ]
    # one column of figures per eval set, each from its own records
    assert [html.count(f'data-plot="reliability zoo:llava · {spec}"') for spec in specs] == [1, 1]
