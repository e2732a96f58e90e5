"""Cheap reliability proxies as commands: `vrprobe probe` (hidden-state probes against confidence, sharpness and the
logit margin on held-out samples) and `vrprobe attribute` (attribution patching over the causal trace's grid, compared
with the exact trace).

Definitions (also written into `summary.json`): see `DEFINITIONS`; the probe itself: `vrprobe.analyses.probe`; AUROC,
AURC and accuracy at coverage: `vrprobe.metrics.selective`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrprobe import checks
from vrprobe.analyses.probe import STABILITY_NOISE, ReliabilityProbe, features
from vrprobe.analyses.saved_probe import cross_fit_calibrator, model_fingerprint, save_probe
from vrprobe.data import load_dataset
from vrprobe.data.shift import shift_images
from vrprobe.errors import UsageError
from vrprobe.metrics.reliability_bins import ece_interval
from vrprobe.metrics.selective import auroc, auroc_interval, selective
from vrprobe.models import Adapter
from vrprobe.registry import as_adapter, model_ref
from vrprobe.runtime.batching import batch_size_option, choose_batch_size, run_batches
from vrprobe.runtime.devices import LoadOptions
from vrprobe.runtime.progress import Progress, Ticker
from vrprobe.runtime.runs import open_run, run_config
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import Attributor, TraceConfig, Tracer, compare, measure_sigma
from vrprobe.tracing.attribution import DEFINITIONS as ATTRIBUTION_DEFINITIONS
from vrprobe.tracing.attribution import mean_estimates

DEFINITIONS = {
    "reliability": "the probe's probability that the answer is correct, from the answer position's hidden state at "
    "best_layer (logistic regression on standardised states, trained on the training split only)",
    "reliability_image_mean": "the same probe on the layer's mean over image tokens",
    "reliability_label_free": "a probe trained without correctness labels, to predict that the answer survives "
    f"Gaussian pixel noise of std {STABILITY_NOISE} (same prediction as on the clean image)",
    "best_layer": "the layer with the best cross-validated AUROC on the training split (never the test split)",
    "auroc": "P(signal of a correct answer > signal of an incorrect one) + 0.5·P(tie), with a 95% percentile "
    "bootstrap interval over samples (1,000 resamples)",
    "aurc": "area under the risk–coverage curve: mean over k of the error rate of the k most trusted answers",
    "accuracy_at_C": "accuracy of the C% most trusted answers",
    "reliability_calibrated": "calibrator(reliability): Platt or isotonic, whichever has the lower log loss on "
    "held-out training scores; fitted on the probe's cross-fitted (out-of-fold) scores of the training data only",
    "ece_reliability / ece_reliability_raw / ece_confidence": "ECE (15 uniform bins, vrprobe.metrics.calibration.ece)"
    " of reliability_calibrated, of the uncalibrated reliability and of the confidence, against correctness; each "
    "with `_ci`, its 95% percentile-bootstrap interval over samples (1,000 resamples, the run's seed: "
    "vrprobe.metrics.reliability_bins.ece_interval)",
    "auroc_reliability": "AUROC of reliability_calibrated, with `_ci` (as auroc); equal to the probe's own AUROC "
    "except where an isotonic calibrator maps different scores to one value (ties)",
    "probe/": "the saved probe (--out only): the `probe` signal's best layer and its calibrator, without pickle "
    "(vrprobe.analyses.saved_probe: weights.safetensors and probe.json)",
    "signals": "confidence (probability), sharpness (negated entropy, nats: sharper = more trusted), margin (top-1 "
    "minus top-2 log-probability over the candidates, nats), probe, probe_image_mean, probe_label_free (probability)",
}
KEPT = ("sample_id", "question_type", "predicted", "correct", "confidence", "sharpness", "margin")


@dataclass
class ProbeResult:
    """Held-out records (one per test sample) and the summary of `probe`."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None


def collect(
    adapter: Adapter, samples: Sequence[Any], batch_size: int | str, progress: Progress | None, stage: str
) -> list[dict[str, Any]]:
    """Eval records with hidden-state features (`score_batch(hidden=True)`), in sample order."""
    out: list[dict[str, Any]] = []
    size = choose_batch_size(adapter, samples, batch_size)
    run_batches(
        samples,
        size,
        lambda idx, chunk: out.extend(score_batch(adapter, chunk, hidden=True)),
        progress=progress,
        stage=stage,
    )
    return out


def signal_values(records: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    """A signal per record, oriented so that higher = more trusted (sharpness: negated entropy)."""
    if name == "sharpness":
        return -np.array([r.get("sharpness", np.nan) for r in records], dtype=float)
    return np.array([r[name] for r in records], dtype=float)


def probe(
    model: str | Adapter,
    data: str,
    eval_data: str | Sequence[str],
    *,
    out: Path | str | None = None,
    layers: Sequence[int] | None = None,
    limit: int | None = None,
    batch_size: int | str = 32,
    seed: int = 0,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    **legacy: Any,
) -> ProbeResult:
    """Train reliability probes on `data` and score them, beside confidence, sharpness and the margin, on each of
    `eval_data` (the first is the held-out test set; further ones measure transfer, e.g. a shifted copy)."""
    checks.options(limit=limit, seed=seed)
    batch_size = batch_size_option(batch_size)
    specs = [s for s in (eval_data.split(",") if isinstance(eval_data, str) else eval_data) if s]
    if not specs:
        raise UsageError("--eval-data needs at least one dataset spec")
    model_spec, load_options = model_ref(model, LoadOptions.from_kwargs(options, legacy, "probe"))
    fields = {"data": data, "eval_data": specs, "layers": list(layers) if layers else None}
    config = run_config("probe", model_spec, load_options, **fields, limit=limit, seed=seed)
    train_set = load_dataset(data, limit=limit, seed=seed)
    test_sets = [load_dataset(spec, limit=limit, seed=seed) for spec in specs]
    train_ids = {s.id for s in train_set.samples}
    for spec, ds in zip(specs, test_sets, strict=True):
        if spec.partition("?")[0] == data.partition("?")[0] and train_ids & {s.id for s in ds.samples}:
            raise UsageError(
                f"--eval-data {spec} shares samples with the training data {data}: held out means held out"
            )
    adapter = as_adapter(model, load_options)
    bad = [x for x in layers or () if not 0 <= x < adapter.num_layers]
    if bad:
        raise UsageError(f"probe layer {bad[0]} is out of range: the model has layers 0..{adapter.num_layers - 1}")
    run = open_run(out, config, overwrite)
    torch.manual_seed(seed)
    train = collect(adapter, train_set.samples, batch_size, progress, f"probe features {data}")
    noisy = shift_images(train_set.samples, {"noise": STABILITY_NOISE}, seed)
    shifted = collect(adapter, noisy, batch_size, progress, f"probe stability {data}")
    y = np.array([r["correct"] for r in train], dtype=float)
    stable = np.array([a["predicted"] == b["predicted"] for a, b in zip(train, shifted, strict=True)], dtype=float)
    probes = {
        "probe": ReliabilityProbe(layers, seed=seed).fit(features(train, "last"), y),
        "probe_image_mean": ReliabilityProbe(layers, seed=seed).fit(features(train, "image_mean"), y),
        "probe_label_free": ReliabilityProbe(layers, seed=seed).fit(features(train, "last"), stable),
    }
    feature_of = {"probe": "last", "probe_image_mean": "image_mean", "probe_label_free": "last"}
    calibrator, calibration = cross_fit_calibrator(probes["probe"], features(train, "last"), y, seed=seed)
    evaluations: dict[str, dict[str, Any]] = {}
    all_records: list[dict[str, Any]] = []
    for spec, ds in zip(specs, test_sets, strict=True):
        test = collect(adapter, ds.samples, batch_size, progress, f"probe eval {spec}")
        correct = np.array([r["correct"] for r in test], dtype=float)
        per_layer = []
        for name, p in probes.items():
            X = features(test, feature_of[name])
            for layer in p.layers_:
                s = p.predict_proba(X, layer)
                ci = auroc_interval(s, correct, seed=seed)
                per_layer.append({"signal": name, "layer": layer, "auroc": auroc(s, correct), "ci": list(ci)})
            for r, v in zip(test, p.predict_proba(X), strict=True):
                r[name.replace("probe", "reliability")] = float(v)
        raw = np.array([r["reliability"] for r in test])
        for r, v in zip(test, calibrator.predict(raw), strict=True):
            r["reliability_calibrated"] = float(v)
        signals = ["confidence", "sharpness", "margin", "probe", "probe_image_mean", "probe_label_free"]
        columns = {"probe": "reliability", "probe_image_mean": "reliability_image_mean"}
        columns["probe_label_free"] = "reliability_label_free"
        calibrated = np.array([r["reliability_calibrated"] for r in test])
        confidence = np.array([r["confidence"] for r in test], dtype=float)
        summaries = {}
        for name in signals:
            values = signal_values(test, columns.get(name, name))
            if np.isfinite(values).all():
                summaries[name] = selective(name, values, correct, seed=seed).to_dict()
        calibrated_auroc = selective("reliability_calibrated", calibrated, correct, seed=seed).to_dict()
        evaluations[spec] = {
            "n": len(test),
            "accuracy": float(correct.mean()),
            "auroc": per_layer,
            "selective": summaries,
            "auroc_reliability": calibrated_auroc["auroc"],
            "auroc_reliability_ci": calibrated_auroc["ci"],
        }
        for name, v in (("reliability", calibrated), ("reliability_raw", raw), ("confidence", confidence)):
            value, bounds = ece_interval(v, correct, seed=seed) if np.isfinite(v).all() else (None, (None, None))
            evaluations[spec].update({f"ece_{name}": value, f"ece_{name}_ci": list(bounds)})
        kept = [*columns.values(), "reliability_calibrated"]
        all_records += [{**{k: r.get(k) for k in KEPT}, "data": spec, **{c: r[c] for c in kept}} for r in test]
    first = evaluations[specs[0]]["selective"]
    summary = {
        "model": model_spec,
        "data": data,
        "eval_data": specs,
        "n_train": len(train),
        "train_accuracy": float(y.mean()),
        "train_stable_fraction": float(stable.mean()),
        "best_layer": probes["probe"].best_layer_,
        "best_layers": {name: p.best_layer_ for name, p in probes.items()},
        "cv_auroc": {name: {str(k): f.cv_auroc for k, f in p.fits_.items()} for name, p in probes.items()},
        "auroc": evaluations[specs[0]]["auroc"],
        "auroc_confidence": first["confidence"]["auroc"],
        "auroc_confidence_ci": first["confidence"]["ci"],
        "auroc_probe": first["probe"]["auroc"],
        "auroc_probe_ci": first["probe"]["ci"],
        "calibrator": calibration,
        "ece_reliability": evaluations[specs[0]]["ece_reliability"],
        "ece_reliability_ci": evaluations[specs[0]]["ece_reliability_ci"],
        "ece_confidence": evaluations[specs[0]]["ece_confidence"],
        "ece_confidence_ci": evaluations[specs[0]]["ece_confidence_ci"],
        "evaluations": evaluations,
        "definitions": DEFINITIONS,
    }
    if run is not None:
        run.append(all_records)
        metrics = {k: summary[k] for k in ("auroc_probe", "ece_reliability", "ece_confidence", "n_train")}
        fingerprint = {**model_fingerprint(adapter), "name": model_spec}
        save_probe(
            run.path / "probe",
            probes["probe"],
            feature="last",
            calibrator=calibrator,
            fingerprint=fingerprint,
            metrics={**metrics, "eval_data": specs[0], "train_data": data},
        )
        run.write_json("summary.json", summary)
    return ProbeResult(records=all_records, summary=summary, out=run.path if run else None)


ATTRIBUTE_DEFINITIONS = {
    **ATTRIBUTION_DEFINITIONS,
    "effect": "the exact causal trace's indirect effect of the same cell (same noise draws), with --compare-trace",
    "spearman": "Spearman rank correlation between a sample's estimate grid and its exact effect grid (all cells)",
    "top3_recall": "fraction of the exact grid's 3 largest cells among the estimate's 3 largest",
    "spearman_attn / spearman_attn_linear": "the same over the attn cells only, for estimate (AtP*: softmax "
    "recomputed) and estimate_linear (softmax linearised)",
    "cost_ratio": "exact tracing time / attribution time (estimate, AtP*) over the same samples; the "
    "linearised-softmax variant, a comparison baseline, is timed apart",
    "cost_ratio_with_linear": "exact tracing time / attribution time including the linearised-softmax variant",
}


@dataclass
class AttributeResult:
    """Attribution rows (one per sample × cell), per-sample comparisons (with --compare-trace) and the summary."""

    rows: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None


def attribute(
    model: str | Adapter,
    data: str,
    *,
    out: Path | str | None = None,
    limit: int | None = None,
    kinds: Sequence[str] | str = ("resid", "mlp", "attn"),
    noise_samples: int = 10,
    noise: float = 3.0,
    window: int = 3,
    seed: int = 0,
    compare_trace: bool = False,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    **legacy: Any,
) -> AttributeResult:
    """Attribution patching over the causal trace's grid for every sample (`vrprobe.tracing.attribution`); with
    `compare_trace`, the exact trace of the same samples too, and how well the estimate ranks its cells."""
    checks.options(limit=limit, noise_samples=noise_samples, noise=noise, window=window, seed=seed)
    kinds = kinds.split(",") if isinstance(kinds, str) else kinds
    cfg = TraceConfig(kinds=tuple(kinds), noise=noise, noise_samples=noise_samples, window=window, seed=seed)
    spec, load_options = model_ref(model, LoadOptions.from_kwargs(options, legacy, "attribute"))
    fields = {"data": data, "limit": limit, "compare_trace": compare_trace, **asdict(cfg)}
    dataset = load_dataset(data, limit=limit, seed=seed)
    adapter = as_adapter(model, load_options)
    run = open_run(out, run_config("attribute", spec, load_options, **fields), overwrite)
    done = {r[0] for r in run.done(("sample_id",), "comparison" if compare_trace else "traces")} if run else set()
    sigma = measure_sigma(adapter, dataset.samples)
    attributor, tracer = Attributor(adapter, sigma, cfg), Tracer(adapter, sigma, cfg)
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    tick = Ticker(progress, f"attribute {spec}", len(dataset.samples))
    for i, sample in enumerate(dataset.samples):
        if sample.id in done:
            tick(1)
            continue
        t0 = time.perf_counter()
        est = attributor.attribute(sample, i)
        seconds = time.perf_counter() - t0
        new = [{**r, "index": i} for r in est.rows()]
        if compare_trace:
            t0 = time.perf_counter()
            exact = tracer.trace(sample, i)
            exact_seconds = time.perf_counter() - t0
            effect = exact.effect
            for r in new:
                r["effect"] = float(effect[cfg.kinds.index(r["kind"]), r["layer"], cfg.groups.index(r["group"])])
            row = {"sample_id": sample.id, "index": i, **compare(effect, est.estimate)}
            row.update(seconds_attribution=seconds - est.seconds_linear, seconds_linear=est.seconds_linear)
            row.update(seconds_exact=exact_seconds)
            if "attn" in cfg.kinds:
                k = cfg.kinds.index("attn")
                row["spearman_attn"] = compare(effect[k], est.estimate[k])["spearman"]
                linear = est.estimate_linear
                row["spearman_attn_linear"] = compare(effect[k], linear)["spearman"] if linear is not None else None
            run.append([row], "comparison") if run else comparisons.append(row)
        run.append(new, "traces") if run else rows.extend(new)
        tick(1)
    if run:
        rows, comparisons = run.read("traces"), (run.read("comparison") if compare_trace else [])
    rows.sort(key=lambda r: r["index"])
    comparisons.sort(key=lambda r: r["index"])
    summary: dict[str, Any] = {
        "model": spec,
        "data": data,
        "n": len(dataset.samples),
        "sigma": sigma,
        "config": asdict(cfg),
        "grid": mean_estimates(rows),
        "definitions": ATTRIBUTE_DEFINITIONS,
    }
    if compare_trace:
        summary["per_sample"] = comparisons
        for key in ("spearman", "top3_recall", "spearman_attn", "spearman_attn_linear"):
            values = [c[key] for c in comparisons if c.get(key) is not None and c[key] == c[key]]
            summary[key] = float(np.mean(values)) if values else None
        total_exact = sum(c["seconds_exact"] for c in comparisons)
        total_attr = sum(c["seconds_attribution"] for c in comparisons)
        total_linear = sum(c.get("seconds_linear", 0.0) for c in comparisons)
        summary["cost_ratio"] = total_exact / total_attr if total_attr > 0 else None
        summary["cost_ratio_with_linear"] = total_exact / (total_attr + total_linear) if total_attr > 0 else None
    if run:
        run.write_json("summary.json", summary)
    return AttributeResult(rows=rows, comparisons=comparisons, summary=summary, out=run.path if run else None)
