"""A saved, calibrated probe (`vrprobe.analyses.saved_probe`): same scores after a fresh process, no pickle, and the
model fingerprint (a renamed copy matches, another model is refused)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import vrprobe.zoo
from vrprobe.analyses.probe import ReliabilityProbe, features
from vrprobe.analyses.proxies import collect
from vrprobe.analyses.saved_probe import cross_fit_calibrator, load_probe, model_fingerprint, save_probe
from vrprobe.data import load_dataset
from vrprobe.errors import UsageError
from vrprobe.registry import load_adapter

from conftest import run_cli
from numerics import assert_close


@pytest.fixture(scope="module")
def llava():
    return load_adapter("zoo:llava")


@pytest.fixture(scope="module")
def saved(llava, tmp_path_factory):
    """A probe trained on zoo:llava's easy-VQA training features, saved; and held-out features to score."""
    train = collect(llava, load_dataset("easy-vqa:train", limit=200, seed=0).samples, 64, None, "train")
    test = collect(llava, load_dataset("easy-vqa:test", limit=40, seed=0).samples, 64, None, "test")
    X, y = features(train, "last"), np.array([r["correct"] for r in train], dtype=float)
    probe = ReliabilityProbe(layers=[2, 3, 4], seed=0).fit(X, y)
    calibrator, _ = cross_fit_calibrator(probe, X, y, seed=0)
    out = tmp_path_factory.mktemp("saved") / "probe"
    save_probe(out, probe, feature="last", calibrator=calibrator, fingerprint=model_fingerprint(llava))
    return out, probe, calibrator, features(test, "last")


def test_saved_raw_score_is_the_probe_and_calibrated_is_its_calibrator(saved):
    out, probe, calibrator, X = saved
    loaded = load_probe(out)
    assert loaded.layer == probe.best_layer_
    # (x − mean) / scale · coef + b, then σ: the same float64 operations as sklearn's, summed in another order
    assert_close(loaded.predict_raw(X), probe.predict_proba(X), dtype=np.float64, scale=1.0, what="raw")
    assert np.array_equal(loaded.predict(X), calibrator.predict(loaded.predict_raw(X)))  # same calls: exact
    assert np.array_equal(loaded.predict_raw(X[:, loaded.layer]), loaded.predict_raw(X))  # one layer or all: exact


def test_a_fresh_process_scores_identically(saved, tmp_path):
    out, _, _, X = saved
    np.save(tmp_path / "features.npy", X)
    code = (
        "import sys, numpy as np; from vrprobe.analyses.saved_probe import load_probe; "
        "p = load_probe(sys.argv[1]); X = np.load(sys.argv[2]); "
        "np.save(sys.argv[3], np.stack([p.predict_raw(X), p.predict(X)]))"
    )
    args = [str(out), str(tmp_path / "features.npy"), str(tmp_path / "scores.npy")]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    loaded = load_probe(out)
    # the same numpy operations on the same float64 numbers in another process: exact
    assert np.array_equal(np.load(tmp_path / "scores.npy"), np.stack([loaded.predict_raw(X), loaded.predict(X)]))


def test_a_renamed_copy_of_the_model_matches_and_another_model_is_refused(saved, llava, tmp_path):
    out = saved[0]
    copy = tmp_path / "someone-elses-name"
    shutil.copytree(Path(vrprobe.zoo.__file__).parent / "checkpoints" / "llava", copy)
    renamed = load_adapter(str(copy))
    assert model_fingerprint(renamed)["config_sha256"] == model_fingerprint(llava)["config_sha256"]
    assert model_fingerprint(renamed)["vocab_sha256"] == model_fingerprint(llava)["vocab_sha256"]
    load_probe(out, renamed)  # no error
    with pytest.raises(UsageError) as err:
        load_probe(out, load_adapter("zoo:paligemma"))
    message = str(err.value)
    assert len(message.splitlines()) == 1 and f"probe {out} was trained on model" in message and "not on" in message


def test_the_files_are_json_and_safetensors_without_pickle(saved):
    out = saved[0]
    assert sorted(p.name for p in out.iterdir()) == ["probe.json", "weights.safetensors"]
    meta = json.loads((out / "probe.json").read_text())
    assert meta["calibrator"]["kind"] in ("platt", "isotonic") and meta["feature"] == "last"
    assert {"config_sha256", "vocab_sha256", "name"} <= set(meta["fingerprint"]) and meta["vrprobe"]
    with safe_open(str(out / "weights.safetensors"), framework="numpy") as f:
        assert set(f.keys()) == {"mean", "scale", "coef", "intercept"}
    for path in out.iterdir():
        assert path.read_bytes()[:1] != b"\x80"  # every pickle of protocol 2 or later opens with 0x80


def test_probe_command_saves_the_calibrated_probe(tmp_path):
    out = tmp_path / "run"
    args = ["--model", "zoo:llava", "--data", "easy-vqa:train", "--limit", "120", "--layers", "2-3"]
    r = run_cli("probe", *args, "--eval-data", "easy-vqa:test", "--out", str(out))
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    ev = s["evaluations"]["easy-vqa:test"]
    assert all(0 <= ev[k] <= 1 for k in ("ece_reliability", "ece_reliability_raw", "ece_confidence"))
    assert s["ece_reliability"] == ev["ece_reliability"] and s["calibrator"]["kind"] in ("platt", "isotonic")
    loaded = load_probe(out / "probe", load_adapter("zoo:llava"))
    assert loaded.layer == s["best_layer"] and loaded.meta["metrics"]["ece_reliability"] == s["ece_reliability"]
