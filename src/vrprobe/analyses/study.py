"""The study: for each model × dataset, eval (confidence, correctness, sharpness), causal tracing on a subset to find
the circuit band, band corruption of that band (causal strength), calibration, correlations with bootstrap intervals,
grounding (`vrprobe.analyses.grounding`: where attention falls, example images) and a verdict from those numbers.

Sign convention (stated once): sharpness is measured as attention entropy (lower = sharper); the correlations use
`sharp` = −sharpness_norm, so that higher = sharper, to read like the seed paper.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from vrprobe.analyses import grounding
from vrprobe.analyses.band import AUTO_GROUPS, auto_band, band_edits, layer_sigmas
from vrprobe.analyses.controls import DEFINITIONS as CONTROL_DEFINITIONS
from vrprobe.analyses.controls import controls_verdict, run_controls
from vrprobe.analyses.jobs import Opened, Source, run_job
from vrprobe.analyses.knockout import DEFINITIONS as KNOCKOUT_DEFINITIONS
from vrprobe.analyses.reliability import DEFINITIONS as RELIABILITY_DEFINITIONS
from vrprobe.analyses.reliability import probe_split, reliability_verdict, selective_stats, train_probe
from vrprobe.analyses.study_rows import StudyJob
from vrprobe.data import Dataset, load_dataset, stratified_subset
from vrprobe.errors import UsageError
from vrprobe.metrics.calibration import calibration_summary
from vrprobe.metrics.heads import head_sharpness
from vrprobe.metrics.stats import ALPHA, correlation
from vrprobe.models import Adapter
from vrprobe.registry import as_adapter
from vrprobe.runtime.batching import choose_batch_size
from vrprobe.runtime.devices import LoadOptions
from vrprobe.runtime.devices import facts as device_facts
from vrprobe.runtime.executors import Executor, LocalExecutor
from vrprobe.runtime.progress import Progress
from vrprobe.runtime.runs import RunDir
from vrprobe.tracing import TraceConfig, trace_dataset

#: normalised-entropy change below which attention "stays focused" under band corruption
FOCUS_TOLERANCE = 0.05
#: a correlation counts only when its 95% CI excludes 0 and its permutation p is below this

DEFINITIONS = {
    "confidence": "softmax over the candidate answers of each candidate's summed token log-likelihood, at the "
    "predicted candidate (probability)",
    "correct": "1 if the prediction equals a reference answer, else 0; open-ended VQA: 1 if its VQA accuracy ≥ 0.5 "
    "(the binarisation used for calibration and the point-biserial r)",
    "accuracy": "mean per-sample accuracy: correct (closed set) or the official VQA accuracy (open-ended)",
    "overconfidence": "max(confidence − correct, 0) per sample (probability)",
    "sharpness": "entropy (nats) of the answer position's attention over the image tokens, renormalised over them, "
    "mean over heads then layers; lower = sharper",
    "sharpness_norm": "sharpness / log(#image tokens), in [0, 1]",
    "sharp": "−sharpness_norm: the signal correlated below, higher = sharper attention",
    "r_sharpness_accuracy": "point-biserial r between sharp and correct, 95% percentile-bootstrap CI, two-sided "
    "permutation p",
    "r_sharpness_overconfidence": "Pearson r between sharp and overconfidence, same CI and p",
    "r_confidence_accuracy": "point-biserial r between confidence and correct (the baseline signal), same CI and p",
    "ece / ace / mce / brier": "expected calibration error (15 equal-width bins), adaptive (equal-mass bins), maximum "
    "calibration error, top-label Brier score mean (confidence − correct)²",
    "band": "the contiguous layers [a, b] with the largest mean resid indirect effect in causal tracing",
    "drop_abs / drop_rel": "accuracy(clean) − accuracy(band corrupted), and that over accuracy(clean)",
    "sharpness_clean / sharpness_corrupted": "mean sharpness (entropy, nats) without / with the band corrupted",
    "verdict": f"a signal 'predicts correctness' when its r's 95% CI lies above 0 and its permutation p < {ALPHA}; "
    "the belief 'sharp attention = reliable' is supported when r_sharpness_accuracy counts as positive and "
    "r_sharpness_overconfidence does not, contradicted when r_sharpness_accuracy counts as negative or "
    f"r_sharpness_overconfidence as positive; attention 'stays focused' when band corruption changes mean "
    f"normalised entropy by less than {FOCUS_TOLERANCE}",
    "head_sharpness": "r(sharp, correct) and r(sharp, overconfidence) for every layer and head (and layer mean), "
    "Benjamini-Hochberg q over that family; a head predicts correctness when q < 0.05 and r > 0",
    **grounding.DEFINITIONS,
    **RELIABILITY_DEFINITIONS,
    **CONTROL_DEFINITIONS,
    **{
        f"knockout {k}": v
        for k, v in KNOCKOUT_DEFINITIONS.items()
        if k not in ("accuracy_knocked_out", "accuracy_blank")
    },
}


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs: models × datasets (the first dataset is the reference; tracing runs on it)."""

    models: tuple[str, ...]
    data: tuple[str, ...]
    limit: int | None = None
    trace_limit: int = 100
    seed: int = 0
    noise: float = 3.0
    band_positions: str = "all"
    band_width: int | None = None
    batch_size: int | str = 32
    n_boot: int = 2000
    max_new_tokens: int = 10
    probe_limit: int = 1000
    load_options: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class StudyResult:
    """Per-sample records (model × dataset × sample), the table (one row per model × dataset) and the summary."""

    records: list[dict[str, Any]]
    table: list[dict[str, Any]]
    summary: dict[str, Any]


def signal_stats(records: Sequence[dict[str, Any]], cfg: StudyConfig) -> dict[str, Any]:
    """Correlations of sharpness and confidence with correctness and overconfidence."""
    conf = np.array([r["confidence"] for r in records])
    correct = np.array([r["correct"] for r in records])
    sharp = -np.array([r["sharpness_norm"] for r in records])
    over = np.clip(conf - correct, 0, None)
    kw = {"n_boot": cfg.n_boot, "n_perm": cfg.n_boot, "seed": cfg.seed}
    return {
        "r_sharpness_accuracy": correlation(sharp, correct, "pointbiserial", **kw).to_dict(),
        "r_sharpness_overconfidence": correlation(sharp, over, "pearson", **kw).to_dict(),
        "r_confidence_accuracy": correlation(conf, correct, "pointbiserial", **kw).to_dict(),
        "r_sharpness_confidence": correlation(sharp, conf, "pearson", **kw).to_dict(),
    }


def verdict(row: dict[str, Any], n_image_tokens: int) -> dict[str, Any]:
    """Conclusions drawn from one table row's numbers (no canned text: every statement follows a test below)."""

    def significant(key: str) -> bool:
        p = row[key]["p"]
        return p is not None and p < ALPHA

    def above(key: str) -> bool:
        lo = row[key]["ci"][0]
        return lo is not None and lo > 0 and significant(key)

    def below(key: str) -> bool:
        hi = row[key]["ci"][1]
        return hi is not None and hi < 0 and significant(key)

    shift = (row["sharpness_corrupted"] - row["sharpness_clean"]) / math.log(n_image_tokens)
    stays = abs(shift) < FOCUS_TOLERANCE
    sharp_acc = above("r_sharpness_accuracy")
    sharp_over = above("r_sharpness_overconfidence")
    conf_acc = above("r_confidence_accuracy")
    predicts = [name for name, ok in (("confidence", conf_acc), ("sharpness", sharp_acc)) if ok]
    if sharp_acc and not sharp_over:
        belief = "supported: sharper attention goes with correct answers and not with overconfidence"
    elif below("r_sharpness_accuracy") or sharp_over:
        belief = "contradicted: sharper attention goes with errors or with overconfidence"
    else:
        belief = "not shown: the sharpness intervals include 0"
    return {
        "signals_predicting_correctness": predicts,
        "sharpness_predicts_correctness": sharp_acc,
        "sharpness_predicts_overconfidence": sharp_over,
        "confidence_predicts_correctness": conf_acc,
        "stronger_signal": "confidence"
        if abs(row["r_confidence_accuracy"]["r"] or 0) >= abs(row["r_sharpness_accuracy"]["r"] or 0)
        else "sharpness",
        "normalised_entropy_change_under_band_corruption": shift,
        "attention_stays_focused_while_accuracy_drops": bool(stays and row["drop_abs"] > 0),
        "belief_sharp_attention_means_reliable": belief,
    }


def find_band(
    adapter: Adapter, spec: str, dataset: Dataset, cfg: StudyConfig, progress: Progress | None
) -> dict[str, Any]:
    """Trace a subset of the reference dataset, choose the band, and measure the band's per-layer σ there."""
    subset = stratified_subset(dataset.samples, cfg.trace_limit, cfg.seed)
    traced = trace_dataset(
        adapter,
        subset,
        TraceConfig(kinds=("resid",), noise=cfg.noise, seed=cfg.seed),
        progress=progress,
        stage=f"trace {spec}",
    )
    band = auto_band(traced.grid, adapter.num_layers, cfg.band_width, AUTO_GROUPS[cfg.band_positions])
    sigmas = layer_sigmas(adapter, subset, list(range(band[0], band[1] + 1)), cfg.band_positions)
    return {
        "model": spec,
        "band_a": band[0],
        "band_b": band[1],
        "sigma": traced.sigma,
        "n": len(subset),
        "sigmas": json.dumps({str(k): v for k, v in sigmas.items()}),
        "grid": json.dumps(traced.grid),
    }


def table_row(
    spec: str,
    adapter_facts: dict[str, Any],
    data: str,
    recs: list[dict[str, Any]],
    band: dict[str, Any],
    cfg: StudyConfig,
    probe_layer: int | None,
    controls: dict[str, Any],
) -> dict[str, Any]:
    """One row of the table from the stored records of one model × dataset (`controls`: the model's, decoded)."""
    conf = np.array([r["confidence"] for r in recs])
    correct = np.array([r["correct"] for r in recs])
    cal = calibration_summary(conf, correct)
    acc = float(np.mean([r["accuracy"] for r in recs]))
    acc_band = float(np.mean([r["band_accuracy"] for r in recs]))
    row = {
        "model": spec,
        **adapter_facts,
        "data": data,
        "n": len(recs),
        "accuracy": acc,
        "ece": cal["ece"],
        "ace": cal["ace"],
        "mce": cal["mce"],
        "brier": cal["brier"],
        **signal_stats(recs, cfg),
        "band": [band["band_a"], band["band_b"]],
        "band_positions": cfg.band_positions,
        "accuracy_band_corrupted": acc_band,
        "drop_abs": acc - acc_band,
        "drop_rel": (acc - acc_band) / acc if acc > 0 else float("nan"),
        "sharpness_clean": float(np.mean([r["sharpness"] for r in recs])),
        "sharpness_corrupted": float(np.mean([r["band_sharpness"] for r in recs])),
        "mean_confidence": float(conf.mean()),
        "reliability_diagram": cal["diagram"],
        "probe_layer": probe_layer,
        **selective_stats(recs, cfg.n_boot, cfg.seed),
        "integration_layers": controls["knockout"]["integration_layers"],
        "band_rank": controls["band_sweep"]["band_rank"],
    }
    heads = head_sharpness(recs, ALPHA)
    row["head_sharpness"] = {k: v for k, v in heads.items() if k != "cells"}
    row |= grounding.sharpness_bins(recs, cfg.n_boot, cfg.seed)
    row |= grounding.grounded_stats(recs, heads["cells"], cfg.n_boot, cfg.seed)
    n_image = int(recs[0]["n_image_tokens"])
    row["verdict"] = {**verdict(row, n_image), **reliability_verdict(row), **controls_verdict(controls, n_image)}
    row["verdict"] |= grounding.answer_verdict(row)
    row["verdict"]["heads_predicting_correctness"] = heads["predicts_correctness"]
    row["verdict"]["heads_going_with_errors"] = heads["goes_with_errors"]
    row["heads"] = heads["cells"]
    return row


def run_study(
    cfg: StudyConfig,
    run: RunDir | None = None,
    progress: Progress | None = None,
    loaded: Mapping[str, Adapter] | None = None,
    loaded_data: Mapping[str, Dataset] | None = None,
    executor: Executor | None = None,
) -> StudyResult:
    """Run (or resume, when `run` already holds results) the whole study; see the module docstring. A model in
    `loaded` (spec -> adapter loaded with `cfg.load_options`) is used as it is; every other spec is loaded. Likewise
    a dataset in `loaded_data` (spec -> `Dataset`, taken as it is: `cfg.limit` is not applied to it). The per-sample
    records run on `executor` (default: this process); band, controls and probe run here, on the driver."""
    given = loaded_data or {}
    executor = executor or LocalExecutor()
    if given and executor.name != "local":
        raise UsageError("a study given loaded datasets runs on the local executor: workers load datasets by spec")
    datasets = [given[s] if s in given else load_dataset(s, limit=cfg.limit, seed=cfg.seed) for s in cfg.data]
    by_spec = {d.spec: d for d in datasets}
    bands = {b["model"]: b for b in (run.read("bands") if run else [])}
    controls = {c["model"]: c for c in (run.read("controls") if run else [])}
    done = run.done(("model", "data", "sample_id")) if run else set()
    records: list[dict[str, Any]] = []
    facts: dict[str, dict[str, Any]] = {}
    probes: dict[str, dict[str, Any]] = {}
    for spec in cfg.models:
        torch.manual_seed(cfg.seed)
        adapter = as_adapter((loaded or {}).get(spec, spec), cfg.load_options)
        facts[spec] = {"family": adapter.family, "params": adapter.num_params, **device_facts(adapter)}
        if spec not in bands:
            bands[spec] = find_band(adapter, spec, datasets[0], cfg, progress)
            if run:
                run.append([bands[spec]], "bands")
        band = bands[spec]
        if spec not in controls:
            controls[spec] = run_controls(
                adapter,
                spec,
                datasets[0],
                (band["band_a"], band["band_b"]),
                trace_limit=cfg.trace_limit,
                positions=cfg.band_positions,
                noise=cfg.noise,
                seed=cfg.seed,
                batch_size=choose_batch_size(adapter, datasets[0].samples, cfg.batch_size),
                n_boot=cfg.n_boot,
                progress=progress,
            )
            if run:
                run.append([controls[spec]], "controls")
        probe_samples = probe_split(datasets[0], cfg.probe_limit, cfg.seed)
        probe, status = train_probe(adapter, probe_samples, cfg.batch_size, cfg.seed, progress, f"probe {spec}")
        probe_ids = {s.id for s in probe_samples}
        probes[spec] = {
            "status": status,
            "layer": probe.best_layer_ if probe else None,
            "n_train": len(probe_samples),
            "cv_auroc": {str(k): f.cv_auroc for k, f in probe.fits_.items()} if probe else {},
        }
        sigmas = {int(k): v for k, v in json.loads(band["sigmas"]).items()}
        edits = band_edits((band["band_a"], band["band_b"]), "hidden", cfg.band_positions, cfg.noise, sigmas)
        size = choose_batch_size(adapter, datasets[0].samples, cfg.batch_size, extra_tokens=cfg.max_new_tokens)
        for dataset in datasets:
            finished = {i for m, d, i in done if (m, d) == (spec, dataset.spec)}
            todo = [i for i, s in enumerate(dataset.samples) if s.id not in finished]
            source = Source(spec, cfg.load_options, dataset.spec, cfg.limit, cfg.seed)
            job = StudyJob(source, spec, tuple(edits), cfg.seed, cfg.max_new_tokens, probe, frozenset(probe_ids))
            kept, size = run_job(
                executor, job, Opened(adapter, dataset.samples), todo, size, run,
                total=len(dataset.samples), progress=progress, stage=f"{spec} · {dataset.spec}",
            )  # fmt: skip
            records.extend(kept.get("records", []))
    if run:
        records = run.read()
    order = {(m, d): (i, j) for i, m in enumerate(cfg.models) for j, d in enumerate(cfg.data)}
    records.sort(key=lambda r: (*order[(r["model"], r["data"])], r["index"]))
    decoded = {
        m: {k: json.loads(c[k]) for k in ("knockout", "band_sweep", "band_non_image")} for m, c in controls.items()
    }
    table = []
    for spec in cfg.models:
        for data in cfg.data:
            recs = [r for r in records if r["model"] == spec and r["data"] == data]
            row = table_row(spec, facts[spec], data, recs, bands[spec], cfg, probes[spec]["layer"], decoded[spec])
            table.append(row | grounding.pope_stats(recs, by_spec[data]))
    heads = {f"{row['model']} · {row['data']}": row.pop("heads") for row in table}
    traces = {
        m: {"sigma": b["sigma"], "n": b["n"], "grid": json.loads(b["grid"]), "band": [b["band_a"], b["band_b"]]}
        for m, b in bands.items()
    }
    summary = {
        "table": table,
        "config": asdict(cfg),
        "traces": traces,
        "probes": probes,
        "knockout": {m: c["knockout"] for m, c in decoded.items() if m in cfg.models},
        "band_sweep": {m: c["band_sweep"] for m, c in decoded.items() if m in cfg.models},
        "band_non_image": {m: c["band_non_image"] for m, c in decoded.items() if m in cfg.models},
        "heads": heads,
        "definitions": DEFINITIONS,
        "verdict": {f"{row['model']} · {row['data']}": row["verdict"] for row in table},
        "examples": grounding.save_examples(records, by_spec, cfg.models, run),
    }
    if run:
        run.write_json("summary.json", summary)
    return StudyResult(records=records, table=table, summary=summary)
