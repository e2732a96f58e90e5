"""Figures for the report (matplotlib, Agg), returned as base64 PNG strings. Plotting only: numbers come in ready.

`forest` (the overview: every correlation with its 95% interval), `reliability`, `scatter`, `heatmaps`, `band`,
`auroc_forest` (reliability signals' held-out AUROC), `risk_coverage`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GROUPS = ("image", "question", "last")
#: one colour per dataset, in the study's order (the clean split first)
DATA_COLORS = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:olive")


def _png(fig: Any, dpi: int = 90) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def reliability(diagram: dict[str, Any], title: str) -> str:
    """Bars of per-bin accuracy against the bin's mean confidence, with the diagonal of perfect calibration."""
    edges = np.array(diagram["edges"], dtype=float)
    acc = np.array([np.nan if a is None else a for a in diagram["accuracy"]], dtype=float)
    counts = np.array(diagram["counts"], dtype=float)
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    ax.bar(centers, np.nan_to_num(acc), width=widths, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "r--", lw=1, label="perfect calibration")
    for c, n, a in zip(centers, counts, acc, strict=True):
        if n > 0 and not np.isnan(a):
            ax.text(c, min(a + 0.02, 0.97), str(int(n)), ha="center", fontsize=6)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (probability)", ylabel="accuracy", title=title)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def scatter(records: Sequence[dict[str, Any]], title: str) -> str:
    """Sharpness (normalised entropy, lower = sharper) against confidence, coloured by correct / incorrect."""
    fig, ax = plt.subplots(figsize=(3.8, 3.2))
    for value, color, label in ((1.0, "tab:green", "correct"), (0.0, "tab:red", "incorrect")):
        pts = [(r["confidence"], r["sharpness_norm"]) for r in records if float(r["correct"]) == value]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.scatter(x, y, s=6, alpha=0.5, c=color, label=f"{label} ({len(pts)})")
    ax.set(xlabel="confidence (probability)", ylabel="normalised attention entropy", title=title, xlim=(0, 1.02))
    ax.legend(fontsize=7)
    return _png(fig)


def heatmaps(grid: Sequence[dict[str, Any]], title: str) -> str:
    """One heatmap per restoration kind: layer × token group, colour = mean indirect effect (probability)."""
    kinds = [k for k in ("resid", "mlp", "attn") if any(c["kind"] == k for c in grid)]
    layers = 1 + max(c["layer"] for c in grid)
    groups = [g for g in GROUPS if any(c["group"] == g for c in grid)] or sorted({c["group"] for c in grid})
    fig, axes = plt.subplots(1, len(kinds), figsize=(2.6 * len(kinds) + 0.8, 3.2), squeeze=False)
    vmax = max(1e-6, max(abs(c["effect"]) for c in grid))
    for i, (ax, kind) in enumerate(zip(axes[0], kinds, strict=True)):
        m = np.zeros((len(groups), layers))
        for c in grid:
            if c["kind"] == kind and c["group"] in groups:
                m[groups.index(c["group"]), c["layer"]] = c["effect"]
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set(title=f"{kind}", xlabel="layer", yticks=range(len(groups)), yticklabels=groups if i == 0 else [])
        ax.set_xticks(range(layers))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="indirect effect")
    fig.suptitle(title, fontsize=9, y=1.03)
    return _png(fig)


def band(acc_clean: float, acc_bad: float, sharp_clean: float, sharp_bad: float, title: str) -> str:
    """Accuracy and attention entropy, clean vs band corrupted."""
    fig, axes = plt.subplots(1, 2, figsize=(4.0, 3.0))
    axes[0].bar(["clean", "band\ncorrupted"], [acc_clean, acc_bad], color=["tab:blue", "tab:orange"])
    axes[0].set(ylim=(0, 1), title="accuracy")
    axes[1].bar(["clean", "band\ncorrupted"], [sharp_clean, sharp_bad], color=["tab:blue", "tab:orange"])
    axes[1].set(title="attention entropy (nats)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def forest(
    cells: Sequence[dict[str, Any]], panels: Sequence[tuple[str, str, str]], title: str, alpha: float = 0.05
) -> str:
    """The overview: one panel per signal, one row per model × dataset; point = r, whisker = its 95% interval, dashed
    vertical line at r = 0. A filled point counts (interval excludes 0 and p < alpha), a hollow one does not.

    cells: `{"model", "data" (short label), "color" (dataset index), key: {"r", "lo", "hi", "counts"} for each panel}`;
    panels: `(key, heading, question)` for each panel, left to right.
    """
    models = list(dict.fromkeys(c["model"] for c in cells))
    ys, y, prev = [], 0.0, None
    for c in cells:
        y += 1.0 if prev in (None, c["model"]) else 1.6  # a gap between models
        ys.append(y)
        prev = c["model"]
    ends = [v for c in cells for k, *_ in panels for v in (c[k]["lo"], c[k]["hi"], c[k]["r"]) if v is not None]
    lo, hi = min([0.0, *ends]), max([0.0, *ends])
    pad = 0.08 * max(hi - lo, 0.2)
    xlim = (max(-1.0, lo - pad), min(1.0, hi + pad))
    fig, axes = plt.subplots(1, len(panels), figsize=(13.2, 1.55 + 0.34 * y), sharey=True, squeeze=False)
    for ax, (key, heading, question) in zip(axes[0], panels, strict=True):
        for i, model in enumerate(models):
            rows = [yy for yy, c in zip(ys, cells, strict=True) if c["model"] == model]
            if i % 2 == 0:
                ax.axhspan(min(rows) - 0.5, max(rows) + 0.5, color="0.94", zorder=0)
        ax.axvline(0, color="0.3", lw=1, ls="--", zorder=1)
        for yy, c in zip(ys, cells, strict=True):
            cell, color = c[key], DATA_COLORS[c["color"] % len(DATA_COLORS)]
            if cell["r"] is None:
                ax.text(0, yy, "n/a", ha="center", va="center", fontsize=8, color="0.4")
                continue
            ax.plot([cell["lo"], cell["hi"]], [yy, yy], color=color, lw=2.2, solid_capstyle="butt", zorder=2)
            ax.plot([cell["lo"]] * 2, [yy - 0.18, yy + 0.18], color=color, lw=1.2, zorder=2)
            ax.plot([cell["hi"]] * 2, [yy - 0.18, yy + 0.18], color=color, lw=1.2, zorder=2)
            face = color if cell["counts"] else "white"
            ax.plot(cell["r"], yy, "o", ms=7, mec=color, mfc=face, mew=1.8, zorder=3)
            label = f"{cell['r']:+.2f}".replace("-", "\u2212")
            ax.annotate(label, (cell["r"], yy), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7.5)
        ax.set_xlim(*xlim)
        ax.set_title(f"{heading}\n", fontsize=11, fontweight="bold", loc="center")
        ax.text(0.5, 1.015, question, transform=ax.transAxes, ha="center", va="bottom", fontsize=9, color="0.3")
        ax.set_xlabel("r with 95% interval", fontsize=9)
        ax.grid(axis="x", color="0.85", lw=0.6)
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    axes[0][0].set_yticks(ys, [f"{c['model']}  ·  {c['data']}" for c in cells], fontsize=9)
    axes[0][0].set_ylim(y + 0.7, 0.3)
    handles = [
        plt.Line2D([], [], color=DATA_COLORS[i % len(DATA_COLORS)], marker="o", lw=2, label=label)
        for i, label in dict.fromkeys((c["color"], c["data"]) for c in cells)
    ]
    for face, label in (("0.3", f"filled: interval excludes 0 and p < {alpha:g}"), ("white", "hollow: otherwise")):
        handles.append(plt.Line2D([], [], color="0.3", marker="o", mfc=face, lw=0, label=label))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left", color="0.25")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97 if title else 1), w_pad=2.0)
    return _png(fig, dpi=100)


SIGNAL_COLORS = {"confidence": "tab:blue", "sharpness": "tab:green", "margin": "tab:purple", "probe": "tab:red"}


def auroc_forest(cells: Sequence[dict[str, Any]], title: str = "") -> str:
    """Reliability signals side by side: one row per model × dataset, one point per signal = its held-out AUROC,
    whisker = 95% interval, dashed line at 0.5 (chance). cells: `{"label", "signals": {name: {"auroc", "ci"}}}`."""
    names = [n for n in SIGNAL_COLORS if any(n in c["signals"] for c in cells)]
    fig, ax = plt.subplots(figsize=(9.5, 1.2 + 0.55 * len(cells)))
    ax.axvline(0.5, color="0.3", lw=1, ls="--")
    for i, c in enumerate(cells):
        for j, name in enumerate(names):
            cell = c["signals"].get(name)
            if not cell or cell.get("auroc") is None:
                continue
            y = i + (j - (len(names) - 1) / 2) * 0.16
            color = SIGNAL_COLORS[name]
            lo, hi = cell["ci"]
            ax.plot([lo, hi], [y, y], color=color, lw=2)
            ax.plot(cell["auroc"], y, "o", color=color, ms=5, label=name if i == 0 else None)
    ax.set_yticks(range(len(cells)), [c["label"] for c in cells], fontsize=9)
    ax.set_ylim(len(cells) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("held-out AUROC, correct vs incorrect (95% interval); 0.5 = chance", fontsize=9)
    ax.grid(axis="x", color="0.85", lw=0.6)
    ax.legend(loc="lower left", fontsize=8.5, ncol=len(names), frameon=False)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return _png(fig, dpi=100)


def risk_coverage(curves: dict[str, tuple[Any, Any]], title: str) -> str:
    """Risk (error rate of the answers kept) against coverage (fraction kept, most trusted first), per signal."""
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for name, (coverage, risk) in curves.items():
        ax.plot(coverage, risk, color=SIGNAL_COLORS.get(name, "0.4"), lw=1.6, label=name)
    ax.set_xlabel("coverage (fraction of answers kept)")
    ax.set_ylabel("risk (error rate of kept answers)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)
