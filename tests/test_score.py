"""`vrprobe score` / `api.score` / `Scorer`: a saved probe's reliability on new data, from the answering forward."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from vrprobe import Scorer
from vrprobe.analyses.saved_probe import load_probe
from vrprobe.data import load_dataset
from vrprobe.registry import load_adapter
from vrprobe.runtime.runs import read_records
from vrprobe.scoring.evaluate import score_batch

from conftest import run_cli
from numerics import FORWARD, assert_close

KEYS = {"sample_id", "predicted", "confidence", "reliability", "reliability_raw", "correct"}


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    """A probe trained by `vrprobe probe` on zoo:llava (easy-VQA, 120 samples, layers 2-3)."""
    out = tmp_path_factory.mktemp("probe") / "run"
    args = ["--model", "zoo:llava", "--data", "easy-vqa:train", "--eval-data", "easy-vqa:test", "--limit", "120"]
    r = run_cli("probe", *args, "--layers", "2-3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out / "probe"


@pytest.fixture(scope="module")
def scored(probe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "run"
    args = ["--model", "zoo:llava", "--probe", str(probe_dir), "--data", "easy-vqa:test", "--limit", "20"]
    r = run_cli("score", *args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, args


@pytest.fixture(scope="module")
def llava():
    return load_adapter("zoo:llava")


def test_records_and_summary(scored):
    out, _ = scored
    records = read_records(out)
    assert len(records) == 20 and all(set(r) >= KEYS for r in records)
    assert not any(k.startswith("hidden") for r in records for k in r)
    assert all(0 <= r["reliability"] <= 1 and 0 <= r["reliability_raw"] <= 1 for r in records)
    assert all(r["correct"] in (0.0, 1.0) for r in records)
    s = json.loads((out / "summary.json").read_text())
    assert s["n"] == 20 and s["accuracy"] == np.mean([r["correct"] for r in records])
    both = len({r["correct"] for r in records}) == 2
    assert (s["auroc_reliability"] is not None) == both and (s["auroc_confidence"] is not None) == both
    assert {"reliability", "reliability_raw", "correct"} <= set(s["definitions"])


def test_reliability_is_the_saved_probe_on_an_independent_forward(scored, probe_dir, llava):
    out, _ = scored
    records = {r["sample_id"]: r for r in read_records(out)}
    samples = load_dataset("easy-vqa:test", limit=20, seed=0).samples
    again = score_batch(llava, samples, hidden=True)
    X = np.stack([r["hidden_last"] for r in again])
    probe = load_probe(probe_dir, llava)
    got = np.array([records[s.id]["reliability"] for s in samples])
    raw = np.array([records[s.id]["reliability_raw"] for s in samples])
    # the features come from a float32 forward (same model, maybe another batch split): FORWARD budget in float32;
    # the probe is a smooth function of them with bounded slope, the calibrator monotone
    assert_close(raw, probe.predict_raw(X), dtype=np.float32, scale=1.0, ulps=FORWARD, what="reliability_raw")
    assert_close(got, probe.predict(X), dtype=np.float32, scale=1.0, ulps=FORWARD, what="reliability")
    assert [records[s.id]["predicted"] for s in samples] == [r["predicted"] for r in again]


def test_scorer_on_images_and_questions_matches_the_command(scored, probe_dir, llava):
    out, _ = scored
    records = {r["sample_id"]: r for r in read_records(out)}
    samples = load_dataset("easy-vqa:test", limit=20, seed=0).samples
    scorer = Scorer.load(probe_dir, model=llava)
    got = scorer([s.load_image() for s in samples], [s.text for s in samples], [list(s.choices or ()) for s in samples])
    assert len(got) == 20 and all(r["correct"] is None for r in got)  # no reference answers given
    assert [r["predicted"] for r in got] == [records[s.id]["predicted"] for s in samples]
    for key in ("reliability", "reliability_raw", "confidence"):
        expected = [records[s.id][key] for s in samples]
        assert_close([r[key] for r in got], expected, dtype=np.float32, scale=1.0, ulps=FORWARD, what=key)
    one = scorer(samples[0].load_image(), samples[0].text)  # open-ended: generation
    assert len(one) == 1 and isinstance(one[0]["predicted"], str) and 0 <= one[0]["reliability"] <= 1


def test_another_models_probe_fails_with_one_line_and_writes_nothing(probe_dir, tmp_path):
    out = tmp_path / "score"
    args = ["--model", "zoo:paligemma", "--probe", str(probe_dir), "--data", "easy-vqa:test", "--limit", "4"]
    r = run_cli("score", *args, "--out", str(out))
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "was trained on model" in lines[0], r.stderr
    assert not out.exists()


def test_a_rerun_resumes_without_duplicates(scored):
    out, args = scored
    before = read_records(out)
    r = run_cli("score", *args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    after = read_records(out)
    assert len(after) == 20 and [x["sample_id"] for x in after] == [x["sample_id"] for x in before]
    assert len(list((out / "records").glob("part-*.parquet"))) == len(list((out / "records").glob("*")))


@pytest.mark.slow
def test_kill_9_mid_score_then_resume_matches_uninterrupted(probe_dir, tmp_path):
    """`vrprobe score` killed with SIGKILL after a few batches: every part written is readable, no summary yet; the
    rerun with the same --out writes the rest, none lost or duplicated, and equals an uninterrupted run."""
    args = ["--model", "zoo:llava", "--probe", str(probe_dir), "--data", "easy-vqa:test", "--limit", "400"]
    args += ["--batch-size", "2"]
    whole = tmp_path / "whole"
    assert run_cli("score", *args, "--out", str(whole)).returncode == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from vrprobe.cli import main; main()", "--quiet", "score", *args]
    cmd += ["--out", str(killed)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    parts = killed / "records"
    while (not parts.is_dir() or len(list(parts.glob("part-*.parquet"))) < 5) and proc.poll() is None:
        assert time.time() < deadline, "no records after 120 s"
        time.sleep(0.01)
    assert proc.poll() is None, "score finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_records(killed)
    assert 0 < len(before) < 400 and not (killed / "summary.json").exists()
    r = run_cli("score", *args, "--out", str(killed))
    assert r.returncode == 0, r.stderr
    after = read_records(killed)
    ids = Counter(x["sample_id"] for x in after)
    assert len(ids) == 400 and max(ids.values()) == 1  # none lost, none duplicated
    assert {x["sample_id"] for x in before} <= set(ids)
    expected = {x["sample_id"]: x for x in read_records(whole)}
    got = {x["sample_id"]: x for x in after}
    assert {k: v["predicted"] for k, v in got.items()} == {k: v["predicted"] for k, v in expected.items()}
    for key in ("confidence", "reliability", "reliability_raw"):
        assert_close(
            [got[k][key] for k in sorted(got)],
            [expected[k][key] for k in sorted(got)],
            dtype=np.float32,
            scale=1.0,
            ulps=FORWARD,
            what=key,
        )
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, killed))
    assert a["n"] == b["n"] == 400 and a["accuracy"] == b["accuracy"]
