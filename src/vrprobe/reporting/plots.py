"""Figures for the report (matplotlib, Agg), returned as base64 PNG strings. Plotting only: numbers come in ready."""

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


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
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
    for ax, kind in zip(axes[0], kinds, strict=True):
        m = np.zeros((len(groups), layers))
        for c in grid:
            if c["kind"] == kind and c["group"] in groups:
                m[groups.index(c["group"]), c["layer"]] = c["effect"]
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set(title=f"{kind}", xlabel="layer", yticks=range(len(groups)), yticklabels=groups)
        ax.set_xticks(range(layers))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="indirect effect")
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def band(acc_clean: float, acc_bad: float, sharp_clean: float, sharp_bad: float, title: str) -> str:
    """Accuracy and attention entropy, clean vs band corrupted."""
    fig, axes = plt.subplots(1, 2, figsize=(4.6, 2.8))
    axes[0].bar(["clean", "band\ncorrupted"], [acc_clean, acc_bad], color=["tab:blue", "tab:orange"])
    axes[0].set(ylim=(0, 1), title="accuracy")
    axes[1].bar(["clean", "band\ncorrupted"], [sharp_clean, sharp_bad], color=["tab:blue", "tab:orange"])
    axes[1].set(title="attention entropy (nats)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)
