"""The report's figures: one section per model with a column per dataset, and the study's two overview plots.

`Plot` is one embedded figure (base64 PNG), `Column` one dataset of a model (key numbers and figures), `ModelSection`
one model. `model_sections(summary, records)` builds a study's sections; `figures(title, records, row)` one dataset's
figures: reliability diagram, sharpness scatter, risk–coverage curves on the held-out records, band corruption bars;
`trace_plot` the causal-trace heatmaps. `overview(table)` is the forest plot of the study's three correlations
(`SIGNALS`), each marked by the verdict's rule (`significant`), and `auroc_overview(table)` that of each reliability
signal's held-out AUROC. Plotting and wording only: every number comes from the run directory.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vrprobe.metrics.calibration import reliability_diagram
from vrprobe.metrics.selective import SIGNALS as SIGNAL_COLUMNS
from vrprobe.metrics.selective import risk_coverage
from vrprobe.metrics.stats import ALPHA
from vrprobe.reporting import flow, plots
from vrprobe.reporting.tables import cell_value, params, r_interval, sig3

#: the study's three correlations: summary key, heading, the question each answers
SIGNALS = (
    ("r_sharpness_accuracy", "r(sharp, correct)", "does sharper attention go with correct answers?"),
    ("r_sharpness_overconfidence", "r(sharp, overconfidence)", "does sharper attention go with overconfidence?"),
    ("r_confidence_accuracy", "r(confidence, correct)", "baseline: does confidence go with correct answers?"),
)


@dataclass
class Plot:
    """One embedded figure: `name` goes to data-plot and alt, `png` is base64; its pixel size is read from the PNG."""

    name: str
    png: str
    width: int = field(init=False)
    height: int = field(init=False)

    def __post_init__(self) -> None:
        head = base64.b64decode(self.png[:32])  # signature and IHDR: width, height at bytes 16–24
        self.width, self.height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@dataclass
class Column:
    """One dataset of a model: its label, 'clean' or 'shifted', key numbers and figures."""

    data: str
    tag: str
    stats: list[tuple[str, str]]
    plots: list[Plot] = field(default_factory=list)


@dataclass
class ModelSection:
    """One model: heading facts and one column per dataset (side by side)."""

    model: str
    facts: str
    columns: list[Column]


def is_shifted(spec: str) -> bool:
    """A dataset spec with a `?query` applies image shifts (`noise=`, `occlude=`): the shifted split."""
    return "?" in spec


def _short_data(spec: str, specs: Sequence[str]) -> str:
    """The label in the overview: 'clean' / the shift query when every dataset shares one base, else the spec."""
    bases = {s.partition("?")[0] for s in specs}
    if len(bases) == 1:
        return spec.partition("?")[2] or "clean"
    return spec


def significant(cell: dict[str, Any]) -> bool:
    """The verdict's rule: the interval excludes 0 and the permutation p is below ALPHA."""
    lo, hi = cell.get("ci") or (None, None)
    p = cell.get("p")
    return lo is not None and hi is not None and p is not None and p < ALPHA and (lo > 0 or hi < 0)


def overview(table: Sequence[dict[str, Any]]) -> Plot:
    """The forest plot of the three correlations, one row per model × dataset."""
    specs = list(dict.fromkeys(r["data"] for r in table))
    cells = []
    for row in table:
        cell: dict[str, Any] = {"model": row["model"], "data": _short_data(row["data"], specs)}
        cell["color"] = specs.index(row["data"])
        for key, _, _ in SIGNALS:
            c = row[key]
            lo, hi = c.get("ci") or (None, None)
            cell[key] = {"r": c.get("r"), "lo": lo, "hi": hi, "counts": significant(c)}
        cells.append(cell)
    png = plots.forest(cells, SIGNALS, "", alpha=ALPHA)
    return Plot("overview forest plot: r(sharp, correct), r(sharp, overconfidence), r(confidence, correct)", png)


def auroc_overview(table: Sequence[dict[str, Any]]) -> Plot | None:
    """The held-out AUROC of each reliability signal, one row per model × dataset; None without them."""
    specs = list(dict.fromkeys(r["data"] for r in table))
    cells = [
        {"label": f"{row['model']}  ·  {_short_data(row['data'], specs)}", "signals": row["selective"]}
        for row in table
        if row.get("selective")
    ]
    if not cells:
        return None
    return Plot("reliability signals: held-out AUROC", plots.auroc_forest(cells))


def _risk_coverage(title: str, records: Sequence[dict[str, Any]]) -> Plot | None:
    """Risk–coverage curves of every signal on the held-out records (those the probe was not trained on)."""
    held = [r for r in records if not r.get("probe_train")]
    if not held or "reliability" not in held[0]:
        return None
    correct = [float(r["correct"]) for r in held]
    curves = {}
    for name, column in SIGNAL_COLUMNS.items():
        values = [r.get(column) for r in held]
        known = [v for v in values if v is not None and v == v]  # neither missing nor NaN
        if len(known) == len(values):
            curves[name] = risk_coverage([-v if name == "sharpness" else v for v in known], correct)
    return Plot(f"risk-coverage {title}", plots.risk_coverage(curves, "risk–coverage (held out)"))


def figures(title: str, records: Sequence[dict[str, Any]], row: dict[str, Any] | None) -> list[Plot]:
    """Reliability diagram and sharpness scatter from the records, band corruption bars from the summary row."""
    out = []
    if records and "confidence" in records[0]:
        conf = [r["confidence"] for r in records]
        correct = [float(r["correct"]) for r in records]
        diagram = reliability_diagram(conf, correct).to_dict()
        out.append(Plot(f"reliability {title}", plots.reliability(diagram, "reliability diagram")))
        if "sharpness_norm" in records[0]:
            out.append(Plot(f"scatter {title}", plots.scatter(records, "sharpness vs confidence")))
    curves = _risk_coverage(title, records)
    if curves:
        out.append(curves)
    if row and "drop_abs" in row:
        acc = float(row["accuracy"] if "accuracy" in row else row["accuracy_clean"])
        png = plots.band(
            acc,
            acc - row["drop_abs"],
            row["sharpness_clean"],
            row["sharpness_corrupted"],
            f"band {cell_value(row['band'])} corrupted",
        )
        out.append(Plot(f"band {title}", png))
    return out


def trace_plot(title: str, grid: Sequence[dict[str, Any]] | None) -> Plot | None:
    """The causal trace's heatmaps (mean indirect effect); None without a trace."""
    if not grid:
        return None
    return Plot(f"trace {title}", plots.heatmaps(grid, "causal trace (mean indirect effect)"))


def model_sections(summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> list[ModelSection]:
    """A study's sections: per model, one column per dataset with its numbers and figures; the model's trace, on the
    study's first dataset, and its knockout figures (`flow.model_plots`) go to the first column."""
    table = summary["table"]
    out = []
    for model in dict.fromkeys(r["model"] for r in table):
        rows = [r for r in table if r["model"] == model]
        columns = []
        for row in rows:
            recs = [r for r in records if r["model"] == model and r["data"] == row["data"]]
            stats = [("n", sig3(row.get("n"))), ("accuracy", sig3(row.get("accuracy")))]
            stats += [("mean conf.", sig3(row.get("mean_confidence"))), ("ECE", sig3(row.get("ece")))]
            stats += [(heading, r_interval(row[key], digits=2)) for key, heading, _ in SIGNALS]
            title = f"{model} · {row['data']}"
            tag = "shifted" if is_shifted(row["data"]) else "clean"
            columns.append(Column(row["data"], tag, stats, figures(title, recs, row)))
            heads = flow.heads_cells(summary, title)
            if heads:
                columns[-1].plots.append(Plot(f"heads {title}", flow.head_heatmap(heads, "r(sharp, correct) per head")))
        trace = summary.get("traces", {}).get(model, {})
        traced = trace_plot(model, trace.get("grid"))
        if traced:  # traced on the study's first dataset: its column
            columns[0].plots.append(traced)
        columns[0].plots += [Plot(name, png) for name, png in flow.model_plots(summary, model)]
        facts = f"{params(rows[0].get('params'))} parameters · {rows[0].get('family', '')}"
        if rows[0].get("band"):
            facts += f" · circuit band: layers {cell_value(rows[0]['band'])}"
        if trace.get("n"):
            facts += f" (causal tracing on {trace['n']} samples of {rows[0]['data']})"
        out.append(ModelSection(model, facts, columns))
    return out
