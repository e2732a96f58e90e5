"""`build_report(run_dir)`: report.html from manifest.json, summary.json and the records/traces tables.

Python only prepares the page's data (formatted strings, base64 PNGs); `templates/report.html.j2` lays it out,
rendered by jinja2 with autoescape on, so every text from datasets, models and the manifest is escaped by construction.
This module holds the page and its tables (`Cell`): a study opens with its verdict and the overview forest plots, then
the study table; single commands (eval, trace, corrupt) get their summary row. The figures and the per-model sections
(`Plot`, `Column`, `ModelSection`) are `vrprobe.reporting.sections`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from vrprobe.errors import VrprobeError
from vrprobe.metrics.stats import ALPHA
from vrprobe.reporting import flow
from vrprobe.reporting.comparison import comparison_section, is_comparison
from vrprobe.reporting.grounding import definitions as grounding_definitions
from vrprobe.reporting.grounding import grounding_sections, looks_right_text
from vrprobe.reporting.probe import is_probe, transfer_section
from vrprobe.reporting.sections import (
    SIGNALS,
    Column,
    ModelSection,
    auroc_overview,
    figures,
    is_shifted,
    model_sections,
    overview,
    significant,
    trace_plot,
)
from vrprobe.reporting.tables import HALVES, cell_value, p_value, params, r_interval, sig3, value_interval
from vrprobe.runtime.runs import atomic_write, read_records

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

#: the grounding table's columns after model and data, each where some row holds it: key, header, tooltip
GROUNDED_COLUMNS = (
    ("n_grounded", "n with boxes", "samples with target boxes (every grounded number uses only these)"),
    ("pointing_accuracy", "pointing acc.", "fraction of samples whose most-attended token cell overlaps a target box"),
    ("r_on_target_correct", "r(on target, correct)", "does attention on the target go with correct answers?"),
    (
        "r_on_target_overconfidence",
        "r(on target, overconfidence)",
        "does attention on the target go with overconfidence?",
    ),
    ("auroc_on_target", "AUROC on target", "attention on target as a predictor of correctness (0.5 = chance)"),
    (
        "looks_right_wrong",
        "error: looks right vs all",
        "error rate among samples whose attention is sharp (lowest entropy tercile) and on target, vs overall",
    ),
    ("mean_attention_lift", "mean lift", "attention on target ÷ target area (1 = no better than uniform)"),
    ("r_sharpness_confidence", "r(sharp, confidence)", "does sharper attention go with higher confidence?"),
    ("precision", "POPE P / R / F1", "POPE's precision, recall and F1, 'yes' the positive class"),
    ("yes_ratio", "yes ratio", "POPE: share of answers that are yes"),
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
class Cell:
    """One table cell: its text, an optional second line, a CSS class and a rowspan (0: covered by the row above)."""

    text: str
    sub: str = ""
    cls: str = ""
    rowspan: int = 1
    title: str = ""


def _signed(x: float) -> str:
    """'+0.151' / '−0.0312': an explicit sign (a true minus) and three significant digits."""
    return ("+" if x >= 0 else "−") + sig3(abs(x))


def _r_cell(cell: dict[str, Any]) -> Cell:
    if cell.get("r") is None:
        return Cell("n/a", cls="r")
    sign = ("pos" if cell["r"] > 0 else "neg") if significant(cell) else ""
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


def _grounded_cell(key: str, row: dict[str, Any]) -> Cell:
    """A grounding-table cell: a value, then its interval below (and its n where not the row's n with boxes); 'n/a'
    where the row has none."""
    cell = row.get(key)
    if key == "looks_right_wrong":
        first, second = looks_right_text(cell)
        return Cell(first, second)
    if key.startswith("r_"):
        return _r_cell(cell or {})
    if key == "precision":
        return Cell(" / ".join(sig3(row.get(k)) for k in ("precision", "recall", "f1")), cls="nowrap")
    if not isinstance(cell, dict):
        return Cell(cell_value(cell))
    if cell.get("value", cell.get("auroc")) is None:
        return Cell("n/a")
    text, _, ci = value_interval(cell).partition(" ")
    n = cell.get("n")
    return Cell(text, ci if n is None or n == row.get("n_grounded") else f"{ci}, n = {n}", cls="nowrap")


def _grounding_table(table: Sequence[dict[str, Any]]) -> tuple[list[Cell], list[list[Cell]]]:
    """The grounding table (header, rows): model, data and the GROUNDED_COLUMNS some row holds; ([], []) when no row
    holds any of them (an older run)."""
    columns = [c for c in GROUNDED_COLUMNS if any(c[0] in row for row in table)]
    if not columns:
        return [], []
    header = [Cell("model", cls="l"), Cell("data", cls="l"), *(Cell(h, title=t) for _, h, t in columns)]
    rows = [
        [
            Cell(row["model"], cls="l model", rowspan=span),
            _data_cell(row["data"]),
            *(_grounded_cell(key, row) for key, _, _ in columns),
        ]
        for row, span in zip(table, _spans(table), strict=True)
    ]
    return header, rows


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
                cells.append(Cell(cell_value(row.get(key))))
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
    halves = [(key, label) for key, label in HALVES if any(key in v for v in verdicts)]
    for key, label in halves:
        found = [v[key]["status"] for v in verdicts if key in v]
        counts = "; ".join(f"{st} in {found.count(st)}" for st in dict.fromkeys(found))
        cells = "cells" if len(found) == n else "cells with target boxes"
        source = {"sharpness_predicts_reliability": "r(sharp, correct)"}.get(key, "r(on target, correct)")
        text = f"{counts} of {len(found)} {cells}, judged by {source}."
        headline.append((f"Does {label.replace(' predicts ', ' predict ')}?", text[:1].upper() + text[1:]))
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
                *(_half_cell(v.get(key)) for key, _ in halves),
            ]
        )
    return headline, rows


def _half_cell(half: dict[str, Any] | None) -> Cell:
    """One half of the grounded verdict: its status, then r [95% CI] and p below; 'n/a' where the cell has none."""
    if not half:
        return Cell("n/a", cls="l")
    st = str(half.get("status", "n/a"))
    return Cell(st, f"r {r_interval(half, digits=2)}, p = {p_value(half.get('p'))}", f"l status {st.replace(' ', '-')}")


def _single(
    summary: dict[str, Any], records: Sequence[dict[str, Any]]
) -> tuple[list[Cell], list[list[Cell]], list[ModelSection]]:
    """An eval, trace, corrupt or probe run: one summary row and one section with its figures (a probe run: a
    column per eval set)."""
    model = _model(summary)
    flat: dict[str, Any] = {"model": model.get("spec", "model"), "params": params(model.get("params"))}
    flat.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list)) or k == "band"})
    flat.update({f"accuracy ({k})": v for k, v in summary.get("accuracy_by_type", {}).items()})
    header = [Cell(k, cls="l" if isinstance(v, str) else "") for k, v in flat.items()]
    row = [
        Cell(v if k == "params" else cell_value(v), cls=h.cls) for h, (k, v) in zip(header, flat.items(), strict=True)
    ]
    data = str(summary.get("eval_data" if is_comparison(summary) else "data", ""))  # the data the records hold
    title = f"{flat['model']} · {data}"
    band_row = summary if "drop_abs" in summary else None
    column = Column(data, "shifted" if is_shifted(data) else "clean", [])
    column.plots = figures(title, records, band_row)
    traced = trace_plot(title, summary.get("grid"))
    if traced:
        column.plots.append(traced)
    columns = [column]
    if is_probe(summary):  # a probe run's records hold every eval set: a column each
        columns = [
            Column(
                spec, "shifted" if is_shifted(spec) else "clean", [], figures(f"{flat['model']} · {spec}", recs, None)
            )
            for spec in summary.get("eval_data", [])
            for recs in [[r for r in records if r.get("data") == spec]]
        ]
    facts = "" if flat["params"] == "n/a" else f"{flat['params']} parameters"  # a probe run does not count them
    return header, [row], [ModelSection(str(flat["model"]), facts, columns)]


def _model(summary: dict[str, Any]) -> dict[str, Any]:
    """The run's model as a dict with its `spec` (a probe run's summary names it by its spec alone)."""
    model = summary.get("model", {})
    return model if isinstance(model, dict) else {"spec": str(model)}


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
    page: dict[str, Any] = {
        "name": out.name,
        "study": "table" in summary and not is_comparison(summary),
        "alpha": ALPHA,
    }
    page["comparison"] = comparison_section(summary)  # None unless a compare run
    page["transfer"] = transfer_section(summary)  # None unless a probe run
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
        page["overview"] = overview(table)
        page["auroc_overview"] = auroc_overview(table)
        page["verdict_header"] = [Cell(h, cls="l") for h in VERDICT_HEADER]
        page["verdict_header"] += [
            Cell(label, cls="l") for key, label in HALVES if any(key in r.get("verdict", {}) for r in table)
        ]
        page["header"] = [Cell("model", cls="l"), Cell("params"), Cell("data", cls="l")]
        page["header"] += [Cell(h, title=t) for _, h, t in COLUMNS]
        page["rows"] = _study_rows(table)
        page["grounding_header"], page["grounding_rows"] = _grounding_table(table)
        page["sections"] = model_sections(summary, records)
        page["grounding"] = grounding_sections(summary, out)
        page["grounding_definitions"] = grounding_definitions(summary) if page["grounding"] else []
    else:
        command = manifest.get("config", {}).get("command", "run")
        model = _model(summary).get("spec", "")
        data = summary.get("eval_data" if page["comparison"] else "data", "")  # a compare run's records: eval data
        page["subtitle"] = f"vrprobe {command} · {model} on {data}"
        page["header"], page["rows"], page["sections"] = _single(summary, records)
        page["grounding"], page["grounding_definitions"] = [], []
        page["grounding_header"], page["grounding_rows"] = [], []
    halves = len(page.get("verdict_header", ())) > len(VERDICT_HEADER)
    page["grounded"] = bool(page["grounding"] or page["grounding_rows"] or halves)  # the grounded styles
    page["definitions"] = [(k, str(v)) for k, v in summary.get("definitions", {}).items()]
    page["manifest"] = json.dumps(manifest, indent=2)
    return _environment().get_template("report.html.j2").render(**page)


def build_report(out: Path) -> Path:
    """Write `out/report.html` (atomically) and return its path."""
    path = Path(out) / "report.html"
    atomic_write(path, render(Path(out)).encode())
    return path
