"""Terminal rendering of a study's table (rich). Formatting only: every number comes from `study.run_study`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table


def _r(cell: dict[str, Any]) -> str:
    if cell["r"] is None:
        return "n/a"
    lo, hi = cell["ci"]
    return f"{cell['r']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


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
    ):
        t.add_column(col, justify="left" if col in ("model", "data") else "right")
    for row in rows:
        t.add_row(
            row["model"],
            row["data"],
            f"{row['params'] / 1e6:.2f}M",
            str(row["n"]),
            f"{row['accuracy']:.3f}",
            f"{row['ece']:.3f}",
            _r(row["r_sharpness_accuracy"]),
            _r(row["r_sharpness_overconfidence"]),
            _r(row["r_confidence_accuracy"]),
            f"{row['band'][0]}-{row['band'][1]}",
            f"{row['drop_abs']:.3f} ({row['drop_rel']:.0%})",
            f"{row['sharpness_clean']:.3f}→{row['sharpness_corrupted']:.3f}",
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
        )
    return out
