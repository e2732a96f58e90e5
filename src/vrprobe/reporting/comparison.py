"""`vrprobe compare` for people: its table in the terminal and its section of the HTML report, from summary.json only.

`ranked(table)` the rows by AUROC, best first (n/a last); `COLUMNS` the terminal table's columns; `print_comparison
(summary)` the run's one-line header, the table within the terminal's width and the rows' notes; `cost_plot(summary)`
AUROC with its 95% interval against cost on a log axis, one point per signal: seconds per sample (the shared clean
forward's included) and passes per sample (the clean forward, the signal's forwards and backwards);
`comparison_section(summary)` what the report draws (None unless the run is a compare run). Layout only: every number
comes from `vrprobe.analyses.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

from vrprobe.reporting.plots import _png
from vrprobe.reporting.sections import Plot
from vrprobe.reporting.tables import Column, sig3, value_interval, wrap
from vrprobe.reporting.terminal import make_console, output_width, print_lines, print_table


def is_comparison(summary: dict[str, Any]) -> bool:
    """Whether `summary` is a `vrprobe compare` run's (its table is one row per signal, not per model × dataset)."""
    return summary.get("command") == "compare" and isinstance(summary.get("table"), list)


def ranked(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows by AUROC, highest first; rows without one (n/a) last, in their order."""
    return sorted(table, key=lambda row: -row["auroc"] if row.get("auroc") is not None else float("inf"))


def _auroc(row: dict[str, Any]) -> str:
    return value_interval({"auroc": row.get("auroc"), "ci": row.get("auroc_ci")}, digits=2)


def _passes(value: float) -> str:
    """A pass count as declared: '0', '1', '35', '2.5'."""
    return f"{float(value):g}"


def kind(row: dict[str, Any]) -> str:
    """'read' (read off the model), 'labels' (trained on correctness labels), 'causal' (intervenes), or both."""
    parts = [name for name, key in (("causal", "causal"), ("labels", "needs_labels")) if row[key]]
    return ", ".join(parts) or "read"


#: the terminal table: signal and AUROC [95% CI] (repeated when the table is split), then the rest
COLUMNS = (
    Column("signal", lambda row: row["signal"], left=True),
    Column("AUROC [95% CI]", _auroc),
    Column("AURC", lambda row: sig3(row.get("aurc"))),
    Column("n", lambda row: str(row["n"])),
    Column("fwd", lambda row: _passes(row["forwards"])),
    Column("bwd", lambda row: _passes(row["backwards"])),
    Column("s/sample", lambda row: sig3(row.get("seconds"))),
    Column("kind", kind, left=True),
    Column("granularity", lambda row: str(row["granularity"]), left=True),
)


def headline(summary: dict[str, Any]) -> str:
    """The run in one sentence: model, eval data and its accuracy, training data, the shared clean forward's cost."""
    model = summary.get("model", {})
    spec = model.get("spec", "model") if isinstance(model, dict) else str(model)
    return (
        f"{spec} on {summary.get('eval_data')}: {summary.get('n')} eval samples, accuracy "
        f"{sig3(summary.get('accuracy'))}; fitted signals learn from {summary.get('n_train')} samples of "
        f"{summary.get('data')}; the shared clean forward takes {sig3(summary.get('clean_seconds_per_sample'))} "
        "s/sample (s/sample below: each signal's own cost beyond it)"
    )


def print_comparison(summary: dict[str, Any], width: int | None = None) -> None:
    """The headline, the signals ranked by AUROC as one table (or narrower ones) within the width, then the notes."""
    width = output_width() if width is None else width
    console = make_console(width)
    rows = ranked(summary["table"])
    print_table(console, headline(summary), COLUMNS, rows, width)
    notes = [f"{row['signal']}: {row['note']}" for row in rows if row.get("note")]
    if notes:
        console.print()
        print_lines(console, [line for text in notes for line in wrap(text, width, more="    ")])


def _cost(row: dict[str, Any], clean_seconds: float, axis: str) -> float | None:
    """A row's cost per sample on `axis`: 'seconds' (clean forward + its own seconds) or 'passes' (1 + forwards +
    backwards); None when it has no seconds (it did not run)."""
    if axis == "passes":
        return 1.0 + float(row["forwards"]) + float(row["backwards"])
    return None if row.get("seconds") is None else clean_seconds + float(row["seconds"])


#: factor between neighbouring points drawn at the same cost (log axis: a fixed sideways step)
DODGE = 1.06
AXES = (
    ("seconds", "seconds per sample (log; the shared clean forward included)"),
    ("passes", "passes per sample (log): clean forward + forwards + backwards"),
)


def cost_plot(summary: dict[str, Any], title: str = "") -> str | None:
    """AUROC (point) with its 95% interval (whisker) against cost on a log x-axis, one point per signal, in two
    panels (`AXES`); dashed line = chance. Filled: label-free; hollow: trained on labels; red: causal. None when no
    signal has an AUROC."""
    rows = [row for row in summary["table"] if row.get("auroc") is not None]
    if not rows:
        return None
    clean = float(summary.get("clean_seconds_per_sample") or 0.0)
    fig, axes = plt.subplots(1, len(AXES), figsize=(11.5, 5.0), sharey=True)
    for ax, (axis, label) in zip(axes, AXES, strict=True):
        costs = [_cost(row, clean, axis) for row in rows]
        xs = []
        for i, (row, cost) in enumerate(zip(rows, costs, strict=True)):
            if cost is None or cost <= 0:
                continue
            same = [j for j, c in enumerate(costs) if c == cost]  # points at one cost: spread a little sideways
            x = cost * DODGE ** (same.index(i) - (len(same) - 1) / 2)
            xs.append(x)
            lo, hi = (row["auroc"] if v is None else v for v in row["auroc_ci"])
            color = "tab:red" if row["causal"] else "tab:blue"
            ax.plot([x, x], [lo, hi], color=color, lw=1.6, alpha=0.7)
            face = "white" if row["needs_labels"] else color
            ax.plot(x, row["auroc"], "o", ms=7, mec=color, mfc=face, mew=1.6)
            offset = (6, 6 - 12 * (i % 2))  # alternate above and below: names at one cost stay apart
            ax.annotate(row["signal"], (x, row["auroc"]), xytext=offset, textcoords="offset points", fontsize=7.5)
        ax.axhline(0.5, color="0.4", lw=1, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if xs:
            ax.set_xlim(min(xs) / 2, max(xs) * 3)
        ax.set_xlabel(label, fontsize=9)
        ax.grid(color="0.9", lw=0.6)
    axes[0].set_ylabel("AUROC, correct vs wrong (95% interval)", fontsize=9)
    axes[0].set_ylim(0, 1.02)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _png(fig, dpi=100)


@dataclass
class ComparisonSection:
    """The report's comparison: the cost figure, the ranked table (header, rows of cell text), the rows' notes and
    the signals not drawn (no AUROC or no cost)."""

    plot: Plot | None
    header: list[str]
    rows: list[list[str]]
    notes: list[tuple[str, str]]
    undrawn: list[str]
    headline: str


def comparison_section(summary: dict[str, Any]) -> ComparisonSection | None:
    """The report's section of a compare run; None for any other run."""
    if not is_comparison(summary):
        return None
    rows = ranked(summary["table"])
    png = cost_plot(summary)
    undrawn = [row["signal"] for row in rows if row.get("auroc") is None]
    return ComparisonSection(
        plot=Plot("signals compared: AUROC against cost", png) if png else None,
        header=[c.header for c in COLUMNS],
        rows=[[c.cell(row) for c in COLUMNS] for row in rows],
        notes=[(row["signal"], str(row["note"])) for row in rows if row.get("note")],
        undrawn=undrawn,
        headline=headline(summary),
    )
