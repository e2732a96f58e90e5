"""Reliability signals in the study: a hidden-state probe trained on a training split, and every signal's
selective-prediction figures (AUROC with interval, AURC, accuracy at coverage) on held-out samples.

Training split (`probe_split`): for easy-VQA and scenes, their train set (a type-stratified subset of
`probe_limit` samples); otherwise a seeded `PROBE_FRACTION` of the first dataset's samples. Records of samples the
probe was trained on
(`probe_train`) are left out of every selective-prediction figure, also in shifted copies of the dataset (same ids),
so that all signals are compared on the same held-out samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vrprobe.analyses.probe import ReliabilityProbe, features
from vrprobe.data import Dataset, Sample, load_dataset
from vrprobe.metrics.selective import SIGNALS, selective
from vrprobe.models import Adapter
from vrprobe.runtime.progress import Progress

PROBE_FRACTION = 0.3
#: the signals compared, each oriented so that higher = more trusted (sharpness: its entropy negated)
DEFINITIONS = {
    "reliability": "the probe's probability that the answer is correct: logistic regression on the answer "
    "position's hidden state at probe_layer, standardised; layer and regularisation chosen by cross-validation on "
    "the training split only (easy-VQA, scenes: their train set; otherwise a seeded "
    f"{PROBE_FRACTION:.0%} of the first dataset, "
    "whose samples are then left out of every AUROC)",
    "margin": "top-1 minus top-2 log-probability over the candidate answers (nats)",
    "auroc_SIGNAL": "P(signal of a correct answer > that of an incorrect one) + 0.5·P(tie), on held-out samples, "
    "with a 95% percentile-bootstrap interval; sharpness enters as its negated entropy (sharper = more trusted)",
    "aurc_SIGNAL": "area under the risk–coverage curve: mean over k of the error rate of the k most trusted answers",
    "most_reliable_signal": "the signal whose AUROC interval lies above every other signal's; none when they overlap",
}


def probe_split(first: Dataset, limit: int, seed: int) -> list[Sample]:
    """The probe's training samples (see the module docstring)."""
    base, _, _ = first.spec.partition("?")
    name, _, rest = base.partition(":")
    if name == "easy-vqa":
        head, _, _ = rest.rpartition(":")
        return load_dataset(f"easy-vqa:{head + ':' if head else ''}train", limit=limit, seed=seed).samples
    if name == "scenes":
        return load_dataset("scenes:train", limit=limit, seed=seed).samples
    n = max(1, round(PROBE_FRACTION * len(first.samples)))
    chosen = np.random.default_rng(seed).choice(len(first.samples), size=n, replace=False)
    return [first.samples[i] for i in sorted(chosen)]


def train_probe(
    adapter: Adapter, samples: Sequence[Sample], batch_size: int | str, seed: int, progress: Progress | None, stage: str
) -> tuple[ReliabilityProbe | None, str]:
    """Fit the correctness probe on the answer-position features of `samples` (one forward per batch); (None, why)
    when the training split has fewer than 2 correct or 2 incorrect answers (then no probe figures are given)."""
    from vrprobe.analyses.proxies import collect

    train = collect(adapter, samples, batch_size, progress, stage)
    y = np.array([r["correct"] for r in train], dtype=float)
    right, wrong = int(y.sum()), int(len(y) - y.sum())
    if min(right, wrong) < 2:
        return None, f"not trained: {right} correct and {wrong} incorrect answers in the training split"
    return ReliabilityProbe(seed=seed).fit(features(train, "last"), y), "trained"


def selective_stats(records: Sequence[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """Table columns from the held-out records (`probe_train` false): auroc_SIGNAL and its _ci, aurc_SIGNAL, and the
    full summaries under `selective` (signals with a missing value, e.g. the margin of open-ended answers, skipped)."""
    held = [r for r in records if not r.get("probe_train")]
    correct = np.array([r["correct"] for r in held], dtype=float)
    out: dict[str, Any] = {"n_held_out": len(held), "selective": {}}
    for name, column in SIGNALS.items():
        values = np.array([r.get(column, math.nan) for r in held], dtype=float)
        if name == "sharpness":
            values = -values
        if not held or not np.isfinite(values).all():
            out[f"auroc_{name}"], out[f"auroc_{name}_ci"], out[f"aurc_{name}"] = None, [None, None], None
            continue
        s = selective(name, values, correct, n_boot=n_boot, seed=seed).to_dict()
        out["selective"][name] = s
        out[f"auroc_{name}"], out[f"auroc_{name}_ci"], out[f"aurc_{name}"] = s["auroc"], s["ci"], s["aurc"]
    return out


def reliability_verdict(row: dict[str, Any]) -> dict[str, Any]:
    """The most reliable signal only where its interval separates from every other's; whether the probe beats
    confidence (its AUROC interval lies above confidence's)."""
    cells = {k: row["selective"][k] for k in row["selective"] if row["selective"][k]["auroc"] is not None}
    best = None
    for name, cell in cells.items():
        others = [c["ci"][1] for k, c in cells.items() if k != name]
        if cell["ci"][0] is not None and others and all(hi is not None and cell["ci"][0] > hi for hi in others):
            best = name
    probe, conf = cells.get("probe"), cells.get("confidence")
    if probe is None or conf is None:
        beats = "not measured"
    elif probe["ci"][0] > conf["ci"][1]:
        beats = "yes: the probe's AUROC interval lies above confidence's"
    elif probe["ci"][1] < conf["ci"][0]:
        beats = "no: confidence ranks right above wrong answers better than the probe (intervals separate)"
    else:
        beats = "no: the probe does not beat confidence (their AUROC intervals overlap)"
    return {"most_reliable_signal": best, "probe_beats_confidence": beats}
