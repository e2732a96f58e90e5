"""`build_report(run_dir)`: report.html from manifest.json, summary.json and the records/traces tables.

Python only prepares the page's data (formatted strings, base64 PNGs: `Plot`, `Cell`, `Column`, `ModelSection`);
`templates/report.html.j2` lays it out, rendered by jinja2 with autoescape on, so every text from datasets, models
and the manifest is escaped by construction. A study opens with its verdict and the overview forest plot; single
commands (eval, trace, corrupt) get their summary row and their figures.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from vrprobe.errors import VrprobeError
from vrprobe.metrics.calibration import reliability_diagram
from vrprobe.metrics.selective import SIGNALS as SIGNAL_COLUMNS
from vrprobe.metrics.stats import ALPHA
from vrprobe.reporting import flow, plots
from vrprobe.reporting.tables import p_value, params, r_interval, sig3
from vrprobe.runtime.runs import atomic_write, read_records

#: the study's three correlations: summary key, heading, the question each answers
SIGNALS = (
    ("r_sharpness_accuracy", "r(sharp, correct)", "does sharper attention go with correct answers?"),
    ("r_sharpness_overconfidence", "r(sharp, overconfidence)", "does sharper attention go with overconfidence?"),
    ("r_confidence_accuracy", "r(confidence, correct)", "baseline: does confidence go with correct answers?"),
)
#: the study table's columns after model, params and data: key, header, tooltip
COLUMNS = (
    ("n", "n", "samples"),
    ("accuracy", "accuracy", "mean accuracy"),
    ("mean_confidence", "mean conf.", "mean confidence of the predicted answer"),
    ("ece", "ECE", "expected calibration error (15 bins)"),
    ("mce", "MCE", "maximum calibration error"),
    ("brier", "Brier", "top-label Brier score"),
    *((key, heading, question) for key, heading, question in SIGNALS),
    ("band", "band", "circuit band (layers) from causal tracing"),
    ("drop", "accuracy drop", "accuracy(clean) − accuracy(band corrupted), relative in brackets"),
    ("entropy", "entropy clean → band", "mean attention entropy (nats), clean → band corrupted"),
)

VERDICT_HEADER = (
    "model",
    "data",
    "signals predicting correctness",
    "larger |r| with correctness",
    "belief 'sharp attention = reliable'",
    "under band corruption, attention …",
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
class Cell:
    """One table cell: its text, an optional second line, a CSS class and a rowspan (0: covered by the row above)."""

    text: str
    sub: str = ""
    cls: str = ""
    rowspan: int = 1
    title: str = ""


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


def _shifted(spec: str) -> bool:
    """A dataset spec with a `?query` applies image shifts (`noise=`, `occlude=`): the shifted split."""
    return "?" in spec


def _short_data(spec: str, specs: Sequence[str]) -> str:
    """The label in the overview: 'clean' / the shift query when every dataset shares one base, else the spec."""
    bases = {s.partition("?")[0] for s in specs}
    if len(bases) == 1:
        return spec.partition("?")[2] or "clean"
    return spec


def _cell_value(v: Any) -> str:
    """Any summary value for a table: numbers in three significant digits, bands as 'a–b', lists joined."""
    if isinstance(v, (int, float)) or v is None:
        return sig3(v)
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return f"{v[0]}–{v[1]}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _signed(x: float) -> str:
    """'+0.151' / '−0.0312': an explicit sign (a true minus) and three significant digits."""
    return ("+" if x >= 0 else "−") + sig3(abs(x))


def _counts(cell: dict[str, Any]) -> bool:
    """The verdict's rule: the interval excludes 0 and the permutation p is below ALPHA."""
    lo, hi = cell.get("ci") or (None, None)
    p = cell.get("p")
    return lo is not None and hi is not None and p is not None and p < ALPHA and (lo > 0 or hi < 0)


def _r_cell(cell: dict[str, Any]) -> Cell:
    if cell.get("r") is None:
        return Cell("n/a", cls="r")
    sign = ("pos" if cell["r"] > 0 else "neg") if _counts(cell) else ""
    return Cell(r_interval(cell), f"p = {p_value(cell.get('p'))}", f"r {sign}".strip())


def _spans(table: Sequence[dict[str, Any]]) -> list[int]:
    """Rowspan of each row's model cell: the count of that model's consecutive rows on its first, 0 on the rest."""
    out = []
    for i, row in enumerate(table):
        if i and table[i - 1]["model"] == row["model"]:
            out.append(0)
            continue
        span = 1
        while i + span < len(table) and table[i + span]["model"] == row["model"]:
            span += 1
        out.append(span)
    return out


def _data_cell(spec: str) -> Cell:
    """The dataset on two lines: its base spec, then the shift query and 'shifted', or 'clean'."""
    base, _, query = spec.partition("?")
    tag = "shifted" if query else "clean"
    return Cell(base, f"{query} ({tag})" if query else tag, cls=f"l data {tag}")


def _study_rows(table: Sequence[dict[str, Any]]) -> list[list[Cell]]:
    """The study table's cells; model and params span that model's consecutive rows."""
    out = []
    for row, span in zip(table, _spans(table), strict=True):
        cells = [Cell(row["model"], cls="l model", rowspan=span), Cell(params(row.get("params")), rowspan=span)]
        cells.append(_data_cell(row["data"]))
        for key, _, _ in COLUMNS:
            if key.startswith("r_"):
                cells.append(_r_cell(row[key]))
            elif key == "drop":
                cells.append(Cell(sig3(row.get("drop_abs")), f"({row['drop_rel']:.0%})" if "drop_rel" in row else ""))
            elif key == "entropy":
                clean, bad = sig3(row.get("sharpness_clean")), sig3(row.get("sharpness_corrupted"))
                cells.append(Cell(f"{clean} → {bad}", cls="nowrap"))
            else:
                cells.append(Cell(_cell_value(row.get(key))))
        out.append(cells)
    return out


def _verdict(table: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[list[Cell]]]:
    """Headline answers counted over the model × dataset cells, and one verdict row per cell (from each row's
    computed verdict)."""
    n = len(table)
    verdicts = [row["verdict"] for row in table]
    status = [v["belief_sharp_attention_means_reliable"].partition(":") for v in verdicts]
    by_status = {s: sum(1 for st, _, _ in status if st == s) for s in dict.fromkeys(st for st, _, _ in status)}
    reasons = {st: why.strip() for st, _, why in status}
    belief = "; ".join(f"{st} in {k} of {n} cells ({reasons[st]})" for st, k in by_status.items())
    conf = sum(v["confidence_predicts_correctness"] for v in verdicts)
    sharp = sum(v["sharpness_predicts_correctness"] for v in verdicts)
    over = sum(v["sharpness_predicts_overconfidence"] for v in verdicts)
    stronger = sum(v["stronger_signal"] == "confidence" for v in verdicts)
    focused = sum(v["attention_stays_focused_while_accuracy_drops"] for v in verdicts)
    headline = [
        ("Sharp attention = reliable?", belief[:1].upper() + belief[1:] + "."),
        (
            "Which signal predicts correctness?",
            f"Confidence in {conf} of {n} cells, sharpness in {sharp} of {n}; confidence has the larger |r| in "
            f"{stronger} of {n}. Sharpness goes with overconfidence in {over} of {n}.",
        ),
        ("Under band corruption", f"attention stays focused while accuracy drops in {focused} of {n} cells."),
    ]
    if all("most_reliable_signal" in v for v in verdicts):
        best = [v["most_reliable_signal"] for v in verdicts]
        named = {b: best.count(b) for b in dict.fromkeys(b for b in best if b)}
        beats = sum(v["probe_beats_confidence"].startswith("yes") for v in verdicts)
        text = "; ".join(f"{b} in {k} of {n} cells" for b, k in named.items()) or "none"
        headline.append(
            (
                "When to trust an answer?",
                f"Signal whose AUROC interval lies above all others': {text} (elsewhere the intervals overlap). "
                f"The hidden-state probe beats confidence in {beats} of {n} cells"
                + ("." if beats else ": it does not beat confidence."),
            )
        )
    rows = []
    for row, v, (st, _, _), span in zip(table, verdicts, status, _spans(table), strict=True):
        key = "r_confidence_accuracy" if v["stronger_signal"] == "confidence" else "r_sharpness_accuracy"
        r = row[key].get("r")
        focus = "stays focused" if v["attention_stays_focused_while_accuracy_drops"] else "does not stay focused"
        shift = v["normalised_entropy_change_under_band_corruption"]
        rows.append(
            [
                Cell(row["model"], cls="l model", rowspan=span),
                _data_cell(row["data"]),
                Cell(", ".join(v["signals_predicting_correctness"]) or "none", cls="l"),
                Cell(f"{v['stronger_signal']} ({'n/a' if r is None else f'{r:+.2f}'.replace('-', '−')})", cls="l"),
                Cell(st, cls=f"l status {st.replace(' ', '-')}"),
                Cell(f"{focus} (Δ {_signed(shift)}, accuracy {_signed(-row['drop_abs'])})", cls="l"),
            ]
        )
    return headline, rows


def _overview(table: Sequence[dict[str, Any]]) -> Plot:
    specs = list(dict.fromkeys(r["data"] for r in table))
    cells = []
    for row in table:
        cell: dict[str, Any] = {"model": row["model"], "data": _short_data(row["data"], specs)}
        cell["color"] = specs.index(row["data"])
        for key, _, _ in SIGNALS:
            c = row[key]
            lo, hi = c.get("ci") or (None, None)
            cell[key] = {"r": c.get("r"), "lo": lo, "hi": hi, "counts": _counts(c)}
        cells.append(cell)
    png = plots.forest(cells, SIGNALS, "", alpha=ALPHA)
    return Plot("overview forest plot: r(sharp, correct), r(sharp, overconfidence), r(confidence, correct)", png)


def _auroc_overview(table: Sequence[dict[str, Any]]) -> Plot | None:
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
    from vrprobe.metrics.selective import risk_coverage

    held = [r for r in records if not r.get("probe_train")]
    if not held or "reliability" not in held[0]:
        return None
    correct = [float(r["correct"]) for r in held]
    curves = {}
    for name, column in SIGNAL_COLUMNS.items():
        values = [r.get(column) for r in held]
        if all(v is not None and v == v for v in values):
            curves[name] = risk_coverage([-v if name == "sharpness" else v for v in values], correct)
    return Plot(f"risk-coverage {title}", plots.risk_coverage(curves, "risk–coverage (held out)"))


def _figures(title: str, records: Sequence[dict[str, Any]], row: dict[str, Any] | None) -> list[Plot]:
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
        acc = row.get("accuracy", row.get("accuracy_clean"))
        png = plots.band(
            acc,
            acc - row["drop_abs"],
            row["sharpness_clean"],
            row["sharpness_corrupted"],
            f"band {_cell_value(row['band'])} corrupted",
        )
        out.append(Plot(f"band {title}", png))
    return out


def _trace(title: str, grid: Sequence[dict[str, Any]] | None) -> Plot | None:
    if not grid:
        return None
    return Plot(f"trace {title}", plots.heatmaps(grid, "causal trace (mean indirect effect)"))


def _model_sections(summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> list[ModelSection]:
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
            tag = "shifted" if _shifted(row["data"]) else "clean"
            columns.append(Column(row["data"], tag, stats, _figures(title, recs, row)))
            heads = flow.heads_cells(summary, title)
            if heads:
                columns[-1].plots.append(Plot(f"heads {title}", flow.head_heatmap(heads, "r(sharp, correct) per head")))
        trace = summary.get("traces", {}).get(model, {})
        traced = _trace(model, trace.get("grid"))
        if traced:  # traced on the study's first dataset: its column
            columns[0].plots.append(traced)
        columns[0].plots += [Plot(name, png) for name, png in flow.model_plots(summary, model)]
        facts = f"{params(rows[0].get('params'))} parameters · {rows[0].get('family', '')}"
        if rows[0].get("band"):
            facts += f" · circuit band: layers {_cell_value(rows[0]['band'])}"
        if trace.get("n"):
            facts += f" (causal tracing on {trace['n']} samples of {rows[0]['data']})"
        out.append(ModelSection(model, facts, columns))
    return out


def _single(
    summary: dict[str, Any], records: Sequence[dict[str, Any]]
) -> tuple[list[Cell], list[list[Cell]], list[ModelSection]]:
    """An eval, trace or corrupt run: one summary row and one section with its figures."""
    model = summary.get("model", {})
    flat: dict[str, Any] = {"model": model.get("spec", "model"), "params": params(model.get("params"))}
    flat.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list)) or k == "band"})
    flat.update({f"accuracy ({k})": v for k, v in summary.get("accuracy_by_type", {}).items()})
    header = [Cell(k, cls="l" if isinstance(v, str) else "") for k, v in flat.items()]
    row = [
        Cell(v if k == "params" else _cell_value(v), cls=h.cls) for h, (k, v) in zip(header, flat.items(), strict=True)
    ]
    title = f"{flat['model']} · {summary.get('data', '')}"
    band_row = summary if "drop_abs" in summary else None
    column = Column(str(summary.get("data", "")), "shifted" if _shifted(str(summary.get("data", ""))) else "clean", [])
    column.plots = _figures(title, records, band_row)
    traced = _trace(title, summary.get("grid"))
    if traced:
        column.plots.append(traced)
    return header, [row], [ModelSection(str(flat["model"]), f"{flat['params']} parameters", [column])]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("vrprobe.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(out: Path) -> str:
    """The report page of a run directory, as HTML text."""
    out = Path(out)
    summary_file = out / "summary.json"
    if not summary_file.is_file():
        raise VrprobeError(f"{out} has no summary.json: not a finished vrprobe run")
    summary = json.loads(summary_file.read_text())
    manifest_file = out / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    records = read_records(out)
    page: dict[str, Any] = {"name": out.name, "study": "table" in summary, "alpha": ALPHA}
    if page["study"]:
        table = summary["table"]
        models = list(dict.fromkeys(r["model"] for r in table))
        datasets = list(dict.fromkeys(r["data"] for r in table))
        ns = sorted({r["n"] for r in table})
        page["subtitle"] = (
            f"{len(models)} model{'s' * (len(models) != 1)} × {len(datasets)} dataset{'s' * (len(datasets) != 1)}"
            f" · n = {ns[0] if len(ns) == 1 else f'{ns[0]}–{ns[-1]}'} per cell"
        )
        page["headline"], page["verdict_rows"] = _verdict(table) if all("verdict" in r for r in table) else ([], [])
        page["headline"] += flow.headline(table, summary)
        page["overview"] = _overview(table)
        page["auroc_overview"] = _auroc_overview(table)
        page["verdict_header"] = [Cell(h, cls="l") for h in VERDICT_HEADER]
        page["header"] = [Cell("model", cls="l"), Cell("params"), Cell("data", cls="l")]
        page["header"] += [Cell(h, title=t) for _, h, t in COLUMNS]
        page["rows"] = _study_rows(table)
        page["sections"] = _model_sections(summary, records)
    else:
        command = manifest.get("config", {}).get("command", "run")
        model = summary.get("model", {}).get("spec", "")
        page["subtitle"] = f"vrprobe {command} · {model} on {summary.get('data', '')}"
        page["header"], page["rows"], page["sections"] = _single(summary, records)
    page["definitions"] = [(k, str(v)) for k, v in summary.get("definitions", {}).items()]
    page["manifest"] = json.dumps(manifest, indent=2)
    return _environment().get_template("report.html.j2").render(**page)


def build_report(out: Path) -> Path:
    """Write `out/report.html` (atomically) and return its path."""
    path = Path(out) / "report.html"
    atomic_write(path, render(Path(out)).encode())
    return path
