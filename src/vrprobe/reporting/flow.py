"""The report's "where the modalities meet" figures and headline: knockout effect-vs-layer curves, the band sweep, the
per-head sharpness heatmap. Plotting and wording only: every number comes from the study's summary
(`vrprobe.analyses.controls`, `vrprobe.analyses.knockout`, `vrprobe.metrics.heads`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from vrprobe.metrics.heads import head_matrix
from vrprobe.reporting.plots import _png
from vrprobe.reporting.tables import integration_text

EDGE_COLORS = {"image->question": "tab:blue", "image->last": "tab:red", "question->last": "tab:green"}


def knockout_curves(windows: Sequence[dict[str, Any]], band: Sequence[int] | None, title: str) -> str:
    """Effect (mean relative change in p(answer)) against the window's first layer, one line per edge with its 95%
    interval shaded; the causal band shaded grey."""
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    if band:
        ax.axvspan(band[0] - 0.5, band[1] + 0.5, color="0.85", label=f"causal band {band[0]}–{band[1]}")
    for edge in dict.fromkeys(w["edge"] for w in windows):
        cells = [w for w in windows if w["edge"] == edge and w["effect"] is not None]
        x = [w["start"] for w in cells]
        y = [w["effect"] for w in cells]
        lo = [np.nan if w["ci"][0] is None else w["ci"][0] for w in cells]
        hi = [np.nan if w["ci"][1] is None else w["ci"][1] for w in cells]
        color = EDGE_COLORS.get(edge, "0.4")
        style = ":" if edge == "last->last" else "-"
        ax.plot(x, y, style, marker="o", ms=3, color=color, label=edge)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15)
    ax.axhline(0, color="k", lw=0.6, ls="--")
    width = windows[0]["end"] - windows[0]["start"] + 1 if windows else 1
    ax.set(xlabel=f"first layer of the {width}-layer window", ylabel="relative change in p(answer)", title=title)
    ax.legend(fontsize=6.5)
    return _png(fig)


def band_sweep_plot(sweep: dict[str, Any], title: str) -> str:
    """Accuracy drop (absolute) for each band of the causal band's width; the causal band in red."""
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    starts = [b["band"][0] for b in sweep["bands"]]
    drops = [b["drop_abs"] for b in sweep["bands"]]
    colors = ["tab:red" if b["band"] == sweep.get("band") else "tab:gray" for b in sweep["bands"]]
    ax.bar(starts, drops, color=colors)
    ax.axhline(0, color="k", lw=0.6)
    w = sweep["bands"][0]["band"][1] - sweep["bands"][0]["band"][0] + 1 if sweep["bands"] else 1
    ax.set(xlabel=f"first layer of the {w}-layer band", ylabel="accuracy drop (absolute)", title=title)
    return _png(fig)


def head_heatmap(heads: dict[str, Any], title: str) -> str:
    """r(sharp, correct) per layer (rows) and head (columns); * marks BH q < alpha."""
    values, significant = head_matrix(heads)
    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * values.shape[1] + 1.6), max(2.4, 0.3 * values.shape[0] + 1.0)))
    lim = max(0.05, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.05)
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for layer, head in zip(*np.nonzero(significant), strict=True):
        ax.text(head, layer, "*", ha="center", va="center", fontsize=9)
    ax.set(xlabel="head", ylabel="layer", title=title)
    fig.colorbar(im, ax=ax, label="r(sharp, correct)")
    return _png(fig)


def model_plots(summary: dict[str, Any], model: str) -> list[tuple[str, str]]:
    """(name, png) of a model's knockout curves and band sweep, where the summary holds them."""
    out = []
    ko = summary.get("knockout", {}).get(model)
    band = summary.get("traces", {}).get(model, {}).get("band")
    if ko and ko.get("windows"):
        title = f"knockout (n = {ko['n_correct']} answered correctly)"
        out.append((f"knockout {model}", knockout_curves(ko["windows"], band, title)))
    sweep = summary.get("band_sweep", {}).get(model)
    if sweep and sweep.get("bands"):
        out.append(
            (f"band sweep {model}", band_sweep_plot(sweep, f"band sweep (causal band rank {sweep['band_rank']})"))
        )
    return out


def heads_cells(summary: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The per-head cells of one model · data key, in the shape `head_matrix` reads (alpha from the table row)."""
    cells = summary.get("heads", {}).get(key)
    return {"cells": cells, "alpha": 0.05} if cells else None


def headline(table: Sequence[dict[str, Any]], summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's answers on integration, the band control and per-head sharpness, counted over the table."""
    if not table or "causal_band_rank" not in table[0].get("verdict", {}):
        return []
    models = list(dict.fromkeys(r["model"] for r in table))
    first = {m: next(r for r in table if r["model"] == m) for m in models}
    where = "; ".join(
        f"{m}: {integration_text(first[m].get('integration_layers'))} (band {'–'.join(map(str, first[m]['band']))})"
        for m in models
    )
    special = [m for m in models if first[m]["verdict"]["causal_band_special"]]
    heads = [(f"{r['model']} · {r['data']}", r["verdict"]["heads_predicting_correctness"]) for r in table]
    hits = [f"{k}: {', '.join(v[:3])}{'…' if len(v) > 3 else ''}" for k, v in heads if v]
    focused = sum(first[m]["verdict"]["focused_while_accuracy_drops_non_image"] for m in models)
    return [
        ("Where do image and text meet?", f"Knockout peak window (to the last significant one): {where}."),
        (
            "Is the causal band special?",
            f"Its accuracy drop is the largest of its sweep in {len(special)} of {len(models)} models"
            + (f" ({', '.join(special)})." if special else "."),
        ),
        (
            "Does any single head's sharpness predict correctness?",
            ("Yes, after Benjamini–Hochberg control: " + "; ".join(hits) + ".")
            if hits
            else f"No: no layer or head passes Benjamini–Hochberg control (q < 0.05) in any of {len(table)} cells.",
        ),
        (
            "Corrupting only non-image positions",
            f"attention stays focused while accuracy drops in {focused} of {len(models)} models.",
        ),
    ]
