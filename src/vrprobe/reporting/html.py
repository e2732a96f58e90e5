"""`build_report(run_dir)`: report.html from manifest.json, summary.json and the records/traces tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from vrprobe.errors import VrprobeError
from vrprobe.metrics.calibration import reliability_diagram
from vrprobe.reporting import plots
from vrprobe.runs import atomic_write, read_records
from vrprobe.tables import verdict_lines

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child,td.l{text-align:left}.row{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px}img.plot{display:block;max-width:100%}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}h2{border-bottom:2px solid #eee}"""


def _img(b64: str, name: str) -> str:
    return f'<img class="plot" data-plot="{escape(name)}" alt="{escape(name)}" src="data:image/png;base64,{b64}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) and "r" in v:
        if v["r"] is None:
            return "n/a"
        lo, hi = v["ci"]
        return f"{v['r']:+.3f} [{lo:+.3f}, {hi:+.3f}] p={v['p']:.3g}"
    if isinstance(v, list):
        return "-".join(map(str, v)) if all(isinstance(x, int) for x in v) else escape(json.dumps(v))
    return escape(str(v))


def _table(rows: Sequence[dict[str, Any]], keys: Sequence[str], table_id: str) -> str:
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _model_cards(
    title: str, records: Sequence[dict[str, Any]], grid: Sequence[dict[str, Any]] | None, row: dict[str, Any] | None
) -> str:
    parts = []
    if records and "confidence" in records[0]:
        conf = [r["confidence"] for r in records]
        correct = [float(r["correct"]) for r in records]
        diagram = reliability_diagram(conf, correct).to_dict()
        parts.append(_img(plots.reliability(diagram, "reliability diagram"), f"reliability {title}"))
        if "sharpness_norm" in records[0]:
            parts.append(_img(plots.scatter(records, "sharpness vs confidence"), f"scatter {title}"))
    if row and "drop_abs" in row:
        acc = row.get("accuracy", row.get("accuracy_clean"))
        parts.append(
            _img(
                plots.band(
                    acc,
                    acc - row["drop_abs"],
                    row["sharpness_clean"],
                    row["sharpness_corrupted"],
                    f"band {_fmt(row['band'])}",
                ),
                f"band {title}",
            )
        )
    if grid:
        parts.append(_img(plots.heatmaps(grid, "causal trace (mean indirect effect)"), f"trace {title}"))
    cards = "".join(f'<div class="card">{p}</div>' for p in parts)
    return f'<div class="card"><h3>{escape(title)}</h3><div class="row">{cards}</div></div>'


def build_report(out: Path) -> Path:
    """Write `out/report.html` (atomically) and return its path."""
    out = Path(out)
    summary_file = out / "summary.json"
    if not summary_file.is_file():
        raise VrprobeError(f"{out} has no summary.json: not a finished vrprobe run")
    summary = json.loads(summary_file.read_text())
    manifest_file = out / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    records = read_records(out)
    sections = [f"<h1>vrprobe report: {escape(out.name)}</h1>"]
    if "table" in summary:  # a study
        table = summary["table"]
        keys = [
            "model",
            "data",
            "params",
            "n",
            "accuracy",
            "ece",
            "mce",
            "brier",
            "r_sharpness_accuracy",
            "r_sharpness_overconfidence",
            "r_confidence_accuracy",
            "band",
            "drop_abs",
            "drop_rel",
            "sharpness_clean",
            "sharpness_corrupted",
        ]
        sections.append("<h2>Study table</h2>" + _table(table, keys, "study-table"))
        verdicts = "".join(f"<li>{escape(line)}</li>" for line in verdict_lines(table))
        sections.append(f"<h2>Verdict (computed from the numbers)</h2><ul>{verdicts}</ul>")
        sections.append("<h2>Per model (datasets side by side)</h2>")
        for model in dict.fromkeys(r["model"] for r in table):
            grid = summary.get("traces", {}).get(model, {}).get("grid")
            cards = []
            for row in (r for r in table if r["model"] == model):
                recs = [r for r in records if r["model"] == model and r["data"] == row["data"]]
                cards.append(_model_cards(f"{model} · {row['data']}", recs, grid if not cards else None, row))
            sections.append(f'<div class="row">{"".join(cards)}</div>')
    else:  # eval, trace or corrupt
        flat = {k: v for k, v in summary.items() if not isinstance(v, (dict, list)) or k in ("band",)}
        flat.update({f"accuracy ({k})": v for k, v in summary.get("accuracy_by_type", {}).items()})
        sections.append("<h2>Summary</h2>" + _table([flat], list(flat), "study-table"))
        grid = summary.get("grid")
        title = summary.get("model", {}).get("spec", "model") + " · " + str(summary.get("data", ""))
        row = summary if "drop_abs" in summary else None
        sections.append(_model_cards(title, records, grid, row))
    definitions = "".join(
        f"<tr><td class='l'>{escape(k)}</td><td class='l'>{escape(str(v))}</td></tr>"
        for k, v in summary.get("definitions", {}).items()
    )
    sections.append(f"<h2>Definitions</h2><table id='definitions'>{definitions}</table>")
    sections.append(f"<h2>Manifest</h2><pre id='manifest'>{escape(json.dumps(manifest, indent=2))}</pre>")
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>vrprobe report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = out / "report.html"
    atomic_write(path, page.encode())
    return path
