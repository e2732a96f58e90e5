"""A study's table for people: number formatting shared by the terminal table (rich) and the HTML report, and the
verdict in words. Formatting only: every number comes from `study.run_study`.

`sig3(x)` three significant digits, `params(n)` 1.47M, `p_value(p)` compact p, `r_interval(cell)` +0.123 [+0.05, +0.19];
`study_table(rows)` the rich table; `verdict_lines(rows)` one sentence per row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table


def sig3(x: float | int | None) -> str:
    """Three significant digits, trailing zeros kept (0.500, 0.0291, 1.98); ints as ints with thousands separators;
    |x| ≥ 1,000 as rounded ints; None and NaN as 'n/a'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1000:
        return f"{round(x):,}"
    if x == 0:
        return "0"
    return f"{x:#.3g}".rstrip(".")


def params(n: float | int | None) -> str:
    """A parameter count in three significant digits with a unit: 1468288 → '1.47M', 7.2e9 → '7.20B', 950 → '950'."""
    if n is None:
        return "n/a"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{sig3(n / scale)}{unit}"
    return str(int(n))


def p_value(p: float | None) -> str:
    """A compact p: '<0.001' below 10⁻³, else two significant digits ('0.16', '0.0035'); None → 'n/a'."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def r_interval(cell: dict[str, Any], digits: int = 3) -> str:
    """A correlation and its 95% interval, '+0.123 [+0.05, +0.19]' (r to `digits`, bounds to 2 decimals)."""
    if cell.get("r") is None:
        return "n/a"
    lo, hi = cell["ci"]
    bounds = ", ".join("n/a" if b is None else f"{b:+.2f}" for b in (lo, hi))
    return f"{cell['r']:+.{digits}f} [{bounds}]"


def study_table(rows: Sequence[dict[str, Any]]) -> Table:
    """One line per model × dataset: params, accuracy, ECE, r(sharp, acc), r(sharp, overconf), band, drop, sharpness."""
    t = Table(title="vrprobe study (sharp = −normalised attention entropy; r with 95% bootstrap CI)")
    for col in (
        "model",
        "data",
        "params",
        "n",
        "acc",
        "ECE",
        "r(sharp, acc)",
        "r(sharp, overconf)",
        "r(conf, acc)",
        "band",
        "drop",
        "entropy clean→band",
        "integration layers",
    ):
        t.add_column(col, justify="left" if col in ("model", "data") else "right")
    for row in rows:
        t.add_row(
            row["model"],
            row["data"],
            params(row["params"]),
            str(row["n"]),
            f"{row['accuracy']:.3f}",
            f"{row['ece']:.3f}",
            r_interval(row["r_sharpness_accuracy"], digits=2),
            r_interval(row["r_sharpness_overconfidence"], digits=2),
            r_interval(row["r_confidence_accuracy"], digits=2),
            f"{row['band'][0]}-{row['band'][1]}",
            f"{row['drop_abs']:.3f} ({row['drop_rel']:.0%})",
            f"{row['sharpness_clean']:.3f}→{row['sharpness_corrupted']:.3f}",
            integration_text(row.get("integration_layers")),
        )
    return t


def integration_text(layers: dict[str, Any] | None) -> str:
    """'i→q 0-1 (to 5-6); i→l 0-1 (to 1-2)': per image edge the knockout window that hurts most and the deepest one
    whose interval excludes 0; 'n/a' when not measured."""
    if not layers:
        return "n/a"
    short = {"image->question": "i→q", "image->last": "i→l"}
    parts = []
    for edge, v in layers.items():
        text = f"{short.get(edge, edge)} {v['peak'][0]}-{v['peak'][1]}"
        parts.append(text + (f" (to {v['last'][0]}-{v['last'][1]})" if v.get("last") else ""))
    return "; ".join(parts)


def auroc_interval_text(row: dict[str, Any], signal: str) -> str:
    """'0.91 [0.85, 0.96]' for a row's auroc_SIGNAL and its interval; 'n/a' when not measured."""
    value, ci = row.get(f"auroc_{signal}"), row.get(f"auroc_{signal}_ci") or [None, None]
    if value is None:
        return "n/a"
    return f"{value:.2f} [{'n/a' if ci[0] is None else f'{ci[0]:.2f}'}, {'n/a' if ci[1] is None else f'{ci[1]:.2f}'}]"


def reliability_table(rows: Sequence[dict[str, Any]]) -> Table:
    """One line per model × dataset: each signal's held-out AUROC [95% interval], the probe's layer, AURC."""
    t = Table(title="reliability signals on held-out samples (AUROC correct vs incorrect [95% bootstrap CI])")
    signals = ("confidence", "sharpness", "margin", "probe")
    for col in ("model", "data", "n held out", *signals, "probe layer", "AURC conf", "AURC probe"):
        t.add_column(col, justify="left" if col in ("model", "data") else "right")
    for row in rows:
        t.add_row(
            row["model"],
            row["data"],
            str(row.get("n_held_out", "")),
            *(auroc_interval_text(row, s) for s in signals),
            "n/a" if row.get("probe_layer") is None else str(row["probe_layer"]),
            *(sig3(row.get(f"aurc_{s}")) for s in ("confidence", "probe")),
        )
    return t


def verdict_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per row: which signals predict correctness, and the belief's status, from the computed verdict."""
    out = []
    for row in rows:
        v = row["verdict"]
        signals = ", ".join(v["signals_predicting_correctness"]) or "none"
        focus = "stays focused" if v["attention_stays_focused_while_accuracy_drops"] else "does not stay focused"
        key = "r_confidence_accuracy" if v["stronger_signal"] == "confidence" else "r_sharpness_accuracy"
        r = row[key]["r"]
        strongest = f"{v['stronger_signal']} (r = {r:+.2f})" if r is not None else v["stronger_signal"]
        out.append(
            f"{row['model']} · {row['data']}: signals predicting correctness: {signals}; largest |r| with "
            f"correctness: {strongest}; under band corruption attention {focus} "
            f"(Δ normalised entropy {v['normalised_entropy_change_under_band_corruption']:+.3f}); "
            f"belief 'sharp attention = reliable': {v['belief_sharp_attention_means_reliable']}"
            + (
                f"; most reliable signal: {v['most_reliable_signal'] or 'none (AUROC intervals overlap)'}; "
                f"probe beats confidence: {v['probe_beats_confidence']}"
                if "most_reliable_signal" in v
                else ""
            )
            + (
                f"; integration layers {integration_text(row.get('integration_layers'))} beside band "
                f"{row['band'][0]}-{row['band'][1]} (rank {v['causal_band_rank']} of its sweep by accuracy drop); "
                f"heads whose sharpness predicts correctness (BH q < 0.05): "
                f"{', '.join(v['heads_predicting_correctness']) or 'none'}"
                + (
                    f", going with errors: {', '.join(v['heads_going_with_errors'])}"
                    if v["heads_going_with_errors"]
                    else ""
                )
                + f"; corrupting non-image positions: accuracy drop {v['non_image_drop_abs']:+.3f}, Δ normalised "
                f"entropy {v['non_image_entropy_change']:+.3f}"
                if "causal_band_rank" in v
                else ""
            )
        )
    return out
