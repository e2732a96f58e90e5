"""The study's grounding half: does looking at the right place go with right answers? From the per-sample records
(`vrprobe.scoring.grounding` adds the grounded keys where a sample has target boxes), one table row's calibration and
confident errors per sharpness tercile (every row), its grounded statistics (rows whose dataset has boxes; absent
otherwise, never zero), POPE's own metrics (POPE rows), the verdict's two halves, and the report's example images.

Grounded statistics use only the samples with boxes ("grounded": a finite `attention_on_target`); sharpness terciles
are taken over all the row's samples, so "sharp" means the same in `ece_by_sharpness` and `looks_right_wrong`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from vrprobe.data import Dataset
from vrprobe.metrics.pope import POPE_DEFINITIONS, POPE_KEYS, pope_metrics
from vrprobe.metrics.reliability_bins import CONFIDENT, by_group, error_among, terciles
from vrprobe.metrics.selective import auroc, auroc_interval
from vrprobe.metrics.stats import ALPHA, correlation, mean_interval
from vrprobe.runtime.runs import RunDir
from vrprobe.scoring.grounding import DEFINITIONS as SAMPLE_DEFINITIONS

#: per-sample keys the study keeps from scoring, where a record has them (grounded ones only with boxes)
GROUNDED_KEYS = (
    "boxes",
    "image_size",
    "image_grid",
    "image_cells",
    "attention_image",
    "target_area",
    "attention_on_target",
    "attention_lift",
    "pointing_hit",
    "attention_on_target_by_layer",
    "attention_lift_by_layer",
    "pointing_hit_by_layer",
    "attention_on_target_by_head",
)
EXAMPLE_KINDS = ("confident_right", "confident_wrong_on_target", "confident_wrong_off_target")
EXAMPLES_PER_KIND = 2
EXAMPLE_SIDE = 256  # example images are downscaled so that their longest side is at most this many pixels

_CI = "95% percentile-bootstrap CI"
DEFINITIONS = {
    "target": "the image region(s) the answer depends on: the sample's boxes [x, y, w, h] in original-image pixels",
    **SAMPLE_DEFINITIONS,
    "r_sharpness_confidence": f"Pearson r between sharp (−sharpness_norm) and confidence (dimensionless), {_CI}, "
    "two-sided permutation p",
    "sharpness tercile": "0 (sharpest), 1, 2 (least sharp): ⌊3·(rank − 1)/n⌋ of sharpness_norm's average rank "
    "(1 = lowest) among the row's n samples; ties share a tercile",
    "ece_by_sharpness": "per sharpness tercile: ECE (15 equal-width bins; probability) of its samples, with n, its "
    f"sharpness_norm range and a {_CI} (the tercile's samples resampled)",
    "confident_error_rate_by_sharpness": f"per sharpness tercile: errors / n_confident, n_confident = its samples "
    f"with confidence ≥ {CONFIDENT} (the denominator; null when 0); probability, {_CI}",
    "n_grounded": "samples with target boxes; every grounded key below uses only these and is absent (not zero) "
    "where the dataset has no boxes",
    "r_on_target_correct": f"point-biserial r between attention_on_target and correct (dimensionless), {_CI}, "
    "two-sided permutation p",
    "r_on_target_overconfidence": f"Pearson r between attention_on_target and overconfidence, {_CI}, permutation p",
    "auroc_on_target": "attention_on_target as a predictor of correctness: P(on target of a right answer > that of a "
    f"wrong one) + 0.5·P(tie), in [0, 1] (0.5 = chance), {_CI}",
    "pointing_accuracy": f"fraction of samples whose most-attended image cell overlaps a target box (mean "
    f"pointing_hit), {_CI}",
    "mean_attention_lift": f"mean attention_lift (on target ÷ target area; 1 = no better than uniform) over samples "
    f"whose target covers a token cell, {_CI}",
    "looks_right_wrong": "error rate (1 − correct; probability) among samples whose attention is sharp (tercile 0) "
    f"and on target (pointing_hit = 1), {_CI}, n; beside it overall_error_rate over all samples with boxes",
    "heads_on_target": "for each layer/head of head_sharpness that predicts correctness (BH q < 0.05, r > 0): "
    f"point-biserial r between its attention_on_target (a layer's mean over heads for 'mean') and correct, {_CI}, "
    "permutation p",
    **POPE_DEFINITIONS,
    "sharpness_predicts_reliability / looking_right_predicts_reliability": "verdict: supported when the r's CI lies "
    f"above 0 and p < {ALPHA}, contradicted when its CI lies below 0 and p < {ALPHA}, else not resolved; r from "
    "r_sharpness_accuracy / r_on_target_correct (the latter absent without boxes)",
    "examples": f"per model · dataset with boxes and one image grid, up to {EXAMPLES_PER_KIND} samples per kind "
    f"(confidence ≥ {CONFIDENT}: right; wrong with pointing_hit 1; wrong with pointing_hit 0), highest confidence "
    f"first, ties by index; images downscaled to ≤ {EXAMPLE_SIDE} px under examples/",
}


def is_grounded(record: Mapping[str, Any]) -> bool:
    """Whether a record has the grounded metrics (its sample had target boxes)."""
    value = record.get("attention_on_target")
    return value is not None and math.isfinite(value) and record.get("pointing_hit") is not None


def _interval(values: Sequence[float], n_boot: int, seed: int) -> dict[str, Any]:
    value, ci = mean_interval(values, n_boot=n_boot, seed=seed)
    return {"value": value, "ci": list(ci), "n": len(values)}


def _clean(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def sharpness_bins(records: Sequence[Mapping[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """`ece_by_sharpness` and `confident_error_rate_by_sharpness` of one row (see DEFINITIONS)."""
    norm = np.array([r["sharpness_norm"] for r in records], dtype=np.float64)
    conf = np.array([r["confidence"] for r in records], dtype=np.float64)
    correct = np.array([r["correct"] for r in records], dtype=np.float64)
    ece_cells, error_cells = by_group(conf, correct, norm, terciles(norm), n_boot=n_boot, seed=seed)
    return {"ece_by_sharpness": ece_cells, "confident_error_rate_by_sharpness": error_cells}


def heads_on_target(
    grounded: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]], alpha: float, n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """r(attention on target of that head, correct) for each per-head cell that predicts correctness (q_correct <
    alpha, r_correct > 0); a layer's 'mean' cell uses attention_on_target_by_layer (its heads' mean)."""
    correct = np.array([r["correct"] for r in grounded], dtype=np.float64)
    out = []
    for c in cells:
        if c.get("q_correct") is None or c["q_correct"] >= alpha or c["r_correct"] <= 0:
            continue
        layer, head = int(c["layer"]), c["head"]
        if head == "mean":
            x = [r["attention_on_target_by_layer"][layer] for r in grounded]
        else:
            x = [r["attention_on_target_by_head"][layer][int(head)] for r in grounded]
        r = correlation(x, correct, "pointbiserial", n_boot=n_boot, n_perm=n_boot, seed=seed).to_dict()
        out.append({"layer": layer, "head": head, "r": r["r"], "ci": r["ci"], "p": r["p"], "n": r["n"]})
    return out


def grounded_stats(
    records: Sequence[Mapping[str, Any]],
    head_cells: Sequence[Mapping[str, Any]],
    n_boot: int,
    seed: int,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """The grounded keys of one row (see DEFINITIONS) over its samples with boxes; {} when it has none."""
    flags = [is_grounded(r) for r in records]
    grounded = [r for r, ok in zip(records, flags, strict=True) if ok]
    if not grounded:
        return {}
    on = np.array([r["attention_on_target"] for r in grounded], dtype=np.float64)
    correct = np.array([r["correct"] for r in grounded], dtype=np.float64)
    over = np.clip(np.array([r["confidence"] for r in grounded], dtype=np.float64) - correct, 0, None)
    hit = np.array([r["pointing_hit"] for r in grounded], dtype=np.float64)
    sharp = terciles([r["sharpness_norm"] for r in records])[np.array(flags)] == 0
    kw = {"n_boot": n_boot, "n_perm": n_boot, "seed": seed}
    lifts = [float(r["attention_lift"]) for r in grounded if r.get("attention_lift") is not None]
    lifts = [v for v in lifts if math.isfinite(v)]
    ci = auroc_interval(on, correct, n_boot=n_boot, seed=seed) if n_boot > 0 else (math.nan, math.nan)
    looks = error_among(correct, sharp & (hit == 1.0), n_boot=n_boot, seed=seed)
    overall = error_among(correct, np.ones(correct.size, dtype=bool), n_boot=n_boot, seed=seed)
    return {
        "n_grounded": len(grounded),
        "r_on_target_correct": correlation(on, correct, "pointbiserial", **kw).to_dict(),
        "r_on_target_overconfidence": correlation(on, over, "pearson", **kw).to_dict(),
        "auroc_on_target": {
            "value": _clean(auroc(on, correct)),
            "ci": [_clean(ci[0]), _clean(ci[1])],
            "n": len(grounded),
        },
        "pointing_accuracy": _interval(hit.tolist(), n_boot, seed),
        "mean_attention_lift": _interval(lifts, n_boot, seed),
        "looks_right_wrong": {
            "error_rate": looks["value"],
            "ci": looks["ci"],
            "n": looks["n"],
            "overall_error_rate": overall["value"],
            "overall_ci": overall["ci"],
            "overall_n": overall["n"],
        },
        "heads_on_target": heads_on_target(grounded, head_cells, alpha, n_boot, seed),
    }


def _status(r: Mapping[str, Any], source: str) -> dict[str, Any]:
    lo, hi = r["ci"]
    significant = r["p"] is not None and r["p"] < ALPHA
    if significant and lo is not None and lo > 0:
        status = "supported"
    elif significant and hi is not None and hi < 0:
        status = "contradicted"
    else:
        status = "not resolved"
    return {"status": status, "r": r["r"], "ci": list(r["ci"]), "p": r["p"], "n": r["n"], "from": source}


def answer_verdict(row: Mapping[str, Any]) -> dict[str, Any]:
    """The study's two halves: `sharpness_predicts_reliability` (from r_sharpness_accuracy) and, when the row has
    boxes, `looking_right_predicts_reliability` (from r_on_target_correct); each {status, r, ci, p, n, from}."""
    out = {"sharpness_predicts_reliability": _status(row["r_sharpness_accuracy"], "r_sharpness_accuracy")}
    if "r_on_target_correct" in row:
        out["looking_right_predicts_reliability"] = _status(row["r_on_target_correct"], "r_on_target_correct")
    return out


def pope_stats(records: Sequence[Mapping[str, Any]], dataset: Dataset) -> dict[str, Any]:
    """POPE's own metrics of a POPE row (every sample marked `meta["benchmark"] == "pope"` by the POPE loader):
    precision, recall, f1, yes_ratio (`vrprobe.metrics.pope.pope_metrics`, 'yes' positive; None where undefined) of
    the predictions against each sample's label; {} for any other dataset."""
    samples = [dataset.samples[int(r["index"])] for r in records]
    if not samples or any(s.meta.get("benchmark") != "pope" for s in samples):
        return {}
    metrics = pope_metrics([str(r["predicted"]) for r in records], [str(s.answers[0]) for s in samples])
    return {k: _clean(metrics[k]) for k in POPE_KEYS}


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit] or "x"


def choose_examples(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """(kind, record) of up to EXAMPLES_PER_KIND samples per kind among the grounded records with one image grid:
    confidence ≥ CONFIDENT and right; wrong with pointing_hit 1; wrong with pointing_hit 0. Highest confidence first,
    ties by index."""
    pool = [
        r for r in records if is_grounded(r) and r.get("attention_image") is not None and r["confidence"] >= CONFIDENT
    ]
    pool.sort(key=lambda r: (-float(r["confidence"]), int(r["index"])))
    tests = {
        "confident_right": lambda r: r["correct"] == 1.0,  # correct is 0.0 or 1.0 exactly (binarised)
        "confident_wrong_on_target": lambda r: r["correct"] == 0.0 and r["pointing_hit"] == 1.0,
        "confident_wrong_off_target": lambda r: r["correct"] == 0.0 and r["pointing_hit"] == 0.0,
    }
    return [(kind, r) for kind in EXAMPLE_KINDS for r in [r for r in pool if tests[kind](r)][:EXAMPLES_PER_KIND]]


def example_png(image: Image.Image, side: int = EXAMPLE_SIDE) -> bytes:
    """The image as PNG bytes, downscaled (Lanczos, aspect kept) so that its longest side is at most `side` px."""
    w, h = image.size
    if max(w, h) > side:
        scale = side / max(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def save_examples(
    records: Sequence[Mapping[str, Any]],
    datasets: Mapping[str, Dataset],
    models: Sequence[str],
    run: RunDir | None,
) -> dict[str, list[dict[str, Any]]]:
    """summary.json's `examples`: per 'MODEL · DATA' with examples, the chosen samples (see `choose_examples`), each
    image written as examples/<file>.png into `run` (the entry's `image` is None without a run directory)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for i, model in enumerate(models):
        for j, (data, dataset) in enumerate(datasets.items()):
            recs = [r for r in records if r["model"] == model and r["data"] == data]
            entries = []
            for kind, r in choose_examples(recs):
                sample = dataset.samples[int(r["index"])]
                image = sample.load_image()
                name = None
                if run is not None:
                    name = f"examples/{i}-{j}-{kind}-{_slug(str(r['sample_id']))}.png"
                    run.write_bytes(name, example_png(image))
                entries.append(
                    {
                        "kind": kind,
                        "sample_id": r["sample_id"],
                        "image": name,
                        "image_size": list(r.get("image_size") or image.size),
                        "image_grid": r["image_grid"],
                        **({"cells": r["image_cells"]} if r.get("image_cells") is not None else {}),
                        "attention_image": r["attention_image"],
                        "boxes": r["boxes"],
                        "question": sample.question,
                        "predicted": r["predicted"],
                        "answers": list(sample.answers),
                        "confidence": r["confidence"],
                        "correct": r["correct"],
                        "attention_on_target": r["attention_on_target"],
                        "pointing_hit": r["pointing_hit"],
                    }
                )
            if entries:
                out[f"{model} · {data}"] = entries
    return out
