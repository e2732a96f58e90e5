"""A study's table for people: number formatting shared by the terminal and the HTML report, the table's columns, and
the verdict in words. Formatting only: every number comes from `study.run_study`; `vrprobe.reporting.terminal` lays it
out.

`sig3(x)` three significant digits, `params(n)` 1.47M, `p_value(p)` compact p, `signed(x)` +0.163,
`cell_value(v)` any summary value (a band as 3–5), `r_interval(cell)` +0.123 [+0.05, +0.19],
`value_interval(cell)` 0.62 [0.41, 0.80], `integration_text(layers)`, `auroc_interval_text(row, signal)`,
`heads_text(names, cells, n)` a count and the top few heads; `Column` one terminal column (header, cell text per row,
the key it needs): `KEY_COLUMNS` the study table's default ones (`POINTING_COLUMN` beside them where it fits),
`MORE_COLUMNS` the others, `RELIABILITY_COLUMNS` the
held-out reliability signals, `GROUNDING_COLUMNS` the grounded numbers, `shown(columns, rows)` those some row can fill;
`verdict_lines(rows, width, heads)` one short line per question asked (`HALVES`: the grounded question's two), each
within `width`; `wrap(text, width)` word wrapping that never breaks a name or
a number group.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: joins the parts of one number group ('+0.12 [+0.05, +0.19]') so that `wrap` never splits it
GLUE = "\u00a0"


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


def signed(x: float | None, digits: int = 3) -> str:
    """A number with an explicit sign to `digits` decimals: '+0.163', '-0.05'; None and NaN as 'n/a'."""
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:+.{digits}f}"


def cell_value(v: Any) -> str:
    """Any summary value for a table: numbers in three significant digits, bands as 'a–b', lists joined."""
    if isinstance(v, (int, float)) or v is None:
        return sig3(v)
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return f"{v[0]}–{v[1]}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def r_interval(cell: dict[str, Any], digits: int = 3) -> str:
    """A correlation and its 95% interval, '+0.123 [+0.05, +0.19]' (r to `digits`, bounds to 2 decimals)."""
    if cell.get("r") is None:
        return "n/a"
    lo, hi = cell["ci"]
    bounds = ", ".join(signed(b, 2) for b in (lo, hi))
    return f"{signed(cell['r'], digits)} [{bounds}]"


def value_interval(cell: dict[str, Any] | None, digits: int = 2, only_ci: bool = False) -> str:
    """'0.62 [0.41, 0.80]': a summary value cell's `value` and its 95% interval `ci` (to `digits` decimals; an AUROC
    cell may name its value `auroc`); '[0.41, 0.80]' with `only_ci`; 'n/a' for a missing value or bound."""
    cell = cell or {}
    value = cell.get("value", cell.get("auroc"))
    lo, hi = cell.get("ci") or (None, None)
    bounds = "[" + ", ".join("n/a" if b is None else f"{b:.{digits}f}" for b in (lo, hi)) + "]"
    if only_ci:
        return bounds
    return "n/a" if value is None else f"{value:.{digits}f} {bounds}"


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


@dataclass(frozen=True)
class Column:
    """One column of a terminal table: its header and its cell's text for a table row (`left`: left-justified)."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    left: bool = False
    needs: str = ""


def shown(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[Column]:
    """`columns` without those that need a key (`Column.needs`) no row holds: an older run, or data without boxes."""
    return [c for c in columns if not c.needs or any(c.needs in row for row in rows)]


def _band(row: dict[str, Any]) -> str:
    return f"{row['band'][0]}-{row['band'][1]}"


#: the study table's default columns: the names, accuracy, ECE, r(sharp, correct) with its CI, the causal drop
KEY_COLUMNS = (
    Column("model", lambda row: row["model"], left=True),
    Column("data", lambda row: row["data"], left=True),
    Column("acc", lambda row: f"{row['accuracy']:.3f}"),
    Column("ECE", lambda row: f"{row['ece']:.3f}"),
    Column("r(sharp, acc)", lambda row: r_interval(row["r_sharpness_accuracy"], digits=2)),
    Column("drop", lambda row: f"{row['drop_abs']:.3f} ({row['drop_rel']:.0%})"),
)
#: the one grounded column the default view adds, where the rows have it and the key columns still fit one table
POINTING_COLUMN = Column(
    "pointing", lambda row: sig3((row.get("pointing_accuracy") or {}).get("value")), needs="pointing_accuracy"
)
#: every other column of a study row that reads as one cell (`vrprobe show --all`)
MORE_COLUMNS = (
    Column("family", lambda row: str(row.get("family", "n/a")), left=True),
    Column("params", lambda row: params(row.get("params"))),
    Column("device", lambda row: str(row.get("device", "n/a")), left=True),
    Column("dtype", lambda row: str(row.get("dtype", "n/a")), left=True),
    Column("n", lambda row: str(row["n"])),
    Column("mean conf", lambda row: sig3(row.get("mean_confidence"))),
    Column("ACE", lambda row: sig3(row.get("ace"))),
    Column("MCE", lambda row: sig3(row.get("mce"))),
    Column("Brier", lambda row: sig3(row.get("brier"))),
    Column("r(sharp, overconf)", lambda row: r_interval(row["r_sharpness_overconfidence"], digits=2)),
    Column("r(conf, acc)", lambda row: r_interval(row["r_confidence_accuracy"], digits=2)),
    Column("band", _band),
    Column("band positions", lambda row: str(row.get("band_positions", "n/a")), left=True),
    Column("acc band", lambda row: sig3(row.get("accuracy_band_corrupted"))),
    Column("entropy clean→band", lambda row: f"{row['sharpness_clean']:.3f}→{row['sharpness_corrupted']:.3f}"),
    Column("integration layers", lambda row: integration_text(row.get("integration_layers")), left=True),
    Column("band rank", lambda row: sig3(row.get("band_rank"))),
)


def _auroc_column(signal: str) -> Column:
    return Column(signal, lambda row: auroc_interval_text(row, signal))


def _aurc_column(short: str, signal: str) -> Column:
    return Column(f"AURC {short}", lambda row: sig3(row.get(f"aurc_{signal}")))


#: held-out AUROC of each reliability signal [95% bootstrap CI], the probe's layer, AURC
RELIABILITY_COLUMNS = (
    Column("n held out", lambda row: str(row.get("n_held_out", ""))),
    *(_auroc_column(s) for s in ("confidence", "sharpness", "margin", "probe")),
    Column("probe layer", lambda row: "n/a" if row.get("probe_layer") is None else str(row["probe_layer"])),
    *(
        _aurc_column(short, s)
        for short, s in (("conf", "confidence"), ("sharp", "sharpness"), ("margin", "margin"), ("probe", "probe"))
    ),
)


def looks_right_rates(cell: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(error rate among samples whose attention is sharp and on target, overall error rate) of a row's
    `looks_right_wrong` cell; (None, None) without it."""
    cell = cell or {}
    return cell.get("error_rate", cell.get("value")), cell.get("overall_error_rate", cell.get("overall"))


def _looks_right(row: dict[str, Any]) -> str:
    rate, overall = looks_right_rates(row.get("looks_right_wrong"))
    return "n/a" if rate is None and overall is None else f"{sig3(rate)} vs {sig3(overall)}"


def _terciles(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: "/".join(sig3(c.get("value")) for c in row[key]) if row.get(key) else "n/a"


def _r_column(header: str, key: str) -> Column:
    return Column(header, lambda row: r_interval(row.get(key) or {}, digits=2), needs=key)


def _pope(row: dict[str, Any]) -> str:
    return "/".join(sig3(row.get(k)) for k in ("precision", "recall", "f1"))


#: the grounded numbers and the calibration by sharpness tercile (`--all`); each shown when some row holds it
GROUNDING_COLUMNS = (
    Column("point acc", lambda row: value_interval(row.get("pointing_accuracy")), needs="pointing_accuracy"),
    _r_column("r(on target, acc)", "r_on_target_correct"),
    _r_column("r(on target, overconf)", "r_on_target_overconfidence"),
    Column("AUROC on target", lambda row: value_interval(row.get("auroc_on_target")), needs="auroc_on_target"),
    Column("wrong: looks right vs all", _looks_right, needs="looks_right_wrong"),
    _r_column("r(sharp, conf)", "r_sharpness_confidence"),
    Column("ECE by sharp tercile", _terciles("ece_by_sharpness"), needs="ece_by_sharpness"),
    Column(
        "conf. errors by tercile",
        _terciles("confident_error_rate_by_sharpness"),
        needs="confident_error_rate_by_sharpness",
    ),
    Column("POPE P/R/F1", _pope, needs="precision"),
    Column("yes ratio", lambda row: sig3(row.get("yes_ratio")), needs="yes_ratio"),
)
GROUNDING_TITLE = (
    "grounding (value [95% bootstrap CI]; looks right: attention sharp and on target; terciles sharpest first)"
)
STUDY_TITLE = "vrprobe study (sharp = −normalised attention entropy; r [95% bootstrap CI]; drop: band corrupted)"
RELIABILITY_TITLE = "reliability signals on held-out samples (AUROC correct vs incorrect [95% bootstrap CI])"


def wrap(text: str, width: int, indent: str = "", more: str = "    ") -> list[str]:
    """`text` in lines of at most `width` characters, broken at spaces only (a name longer than the width stays whole
    on its own line); `indent` starts the first line, `more` the others; `GLUE` holds a number group together."""
    lines = textwrap.wrap(
        text,
        width=max(width, 1),
        initial_indent=indent,
        subsequent_indent=more,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [line.replace(GLUE, " ") for line in lines] or [indent.rstrip()]


def _glued(text: str) -> str:
    return text.replace(" ", GLUE)


def _status(text: str) -> str:
    """The verdict's status word(s) before its colon: 'supported', 'contradicted', 'not shown', 'no', 'yes'."""
    return text.partition(":")[0].strip()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _head_label(name: str) -> tuple[str, tuple[int, Any] | None]:
    """'layer 3 head 1' → ('L3H1', (3, 1)); 'layer 3' (the layer's mean over heads) → ('L3 mean', (3, 'mean'))."""
    m = re.fullmatch(r"layer (\d+)(?: head (\d+))?", name)
    if not m:
        return name, None
    layer, head = int(m[1]), (int(m[2]) if m[2] is not None else "mean")
    return (f"L{layer}H{head}" if head != "mean" else f"L{layer}{GLUE}mean"), (layer, head)


def heads_text(names: Sequence[str], cells: Sequence[dict[str, Any]] | None, n_tests: int | None, top: int = 3) -> str:
    """'12 of 40; top 3: L3H1 r=+0.21, L2H0 r=+0.18, L5 mean r=+0.15': how many layers/heads the verdict names (of
    `n_tests`), and the `top` of them by q then |r| (r from the study's per-head `cells`; names only without them);
    all of them, without 'top', when they are no more than `top`."""
    count = f"{len(names)} of {n_tests}" if n_tests is not None else str(len(names))
    if not names:
        return count
    by_key = {(c["layer"], c["head"]): c for c in cells or ()}
    labelled: list[tuple[str, dict[str, Any] | None]] = []
    for name in names:
        label, key = _head_label(name)
        labelled.append((label, None if key is None else by_key.get(key)))
    known = [(label, c) for label, c in labelled if c is not None]
    if len(known) == len(labelled):  # every name has its cell: by q, then |r|
        known.sort(key=lambda lc: (lc[1]["q_correct"], -abs(lc[1]["r_correct"])))
        labelled[:] = known
    shown = [label + (f"{GLUE}r={signed(c['r_correct'], 2)}" if c is not None else "") for label, c in labelled[:top]]
    return f"{count}; top {top}: {', '.join(shown)}" if len(names) > top else f"{count}: {', '.join(shown)}"


def _fitting(
    label: str, names: Sequence[str], cells: Sequence[dict[str, Any]] | None, n: int | None, width: int
) -> str:
    """`label` + `heads_text` with as many top heads (3, 2, then 1) as keep the indented line within `width`."""
    for top in (3, 2):
        text = label + heads_text(names, cells, n, top)
        if len(wrap(text, width, indent="  ")) == 1:
            return text
    return label + heads_text(names, cells, n, 1)


#: the verdict's two halves of the grounded question: key, the line's label
HALVES = (
    ("sharpness_predicts_reliability", "sharpness predicts reliability"),
    ("looking_right_predicts_reliability", "looking right predicts reliability"),
)


def _halves(v: dict[str, Any]) -> list[str]:
    """'sharpness predicts reliability: not resolved, r +0.05 [-0.10, +0.20]' for each half the verdict holds."""
    return [
        f"{label}: {v[key].get('status', 'n/a')}, {_glued('r ' + r_interval(v[key], digits=2))}"
        for key, label in HALVES
        if isinstance(v.get(key), dict)
    ]


def _answers(row: dict[str, Any], cells: Sequence[dict[str, Any]] | None, width: int) -> list[str]:
    """One line per question the study answers for `row`: its status, the number and its CI (from `row["verdict"]`
    and the row's own numbers; `cells`: the row's per-head cells, for the top heads' r; `width`: how many fit)."""
    v = row["verdict"]

    def r(label: str, key: str) -> str:
        return _glued(f"{label} {r_interval(row[key], digits=2)}")

    def auroc(signal: str) -> str:
        return _glued(auroc_interval_text(row, signal))

    lines = [
        f"belief 'sharp = reliable': {_status(v['belief_sharp_attention_means_reliable'])}, "
        f"{r('r(sharp, acc)', 'r_sharpness_accuracy')}",
        f"confidence predicts correctness: {_yes(v['confidence_predicts_correctness'])}, "
        f"{r('r(conf, acc)', 'r_confidence_accuracy')}",
        f"sharpness predicts overconfidence: {_yes(v['sharpness_predicts_overconfidence'])}, "
        f"{r('r(sharp, overconf)', 'r_sharpness_overconfidence')}",
        *_halves(v),
        f"stays focused (band {_band(row)} corrupted): {_yes(v['attention_stays_focused_while_accuracy_drops'])}, "
        f"Δ norm. entropy {signed(v['normalised_entropy_change_under_band_corruption'])}, drop {row['drop_abs']:.3f}",
    ]
    if "most_reliable_signal" in v:
        best = v["most_reliable_signal"]
        most = f"{best}, AUROC {auroc(best)}" if best else "none (AUROC intervals overlap)"
        lines += [
            f"reliability signals, most reliable: {most}",
            f"probe beats confidence: {_status(v['probe_beats_confidence'])}, AUROC {auroc('probe')} vs "
            f"conf. {auroc('confidence')}",
        ]
    if "causal_band_rank" in v:
        n_tests = (row.get("head_sharpness") or {}).get("n_tests")
        lines += [
            f"causal band {_band(row)} hurts most in its sweep: {_yes(v['causal_band_special'])} "
            f"(rank {v['causal_band_rank']})",
            f"integration layers: {integration_text(row.get('integration_layers'))}",
            _fitting(
                "heads predicting correctness (BH q < 0.05): ", v["heads_predicting_correctness"], cells, n_tests, width
            ),
            _fitting("heads going with errors (BH q < 0.05): ", v["heads_going_with_errors"], cells, n_tests, width),
            f"stays focused (non-image corrupted): {_yes(v['focused_while_accuracy_drops_non_image'])}, "
            f"Δ norm. entropy {signed(v['non_image_entropy_change'])}, drop {signed(v['non_image_drop_abs'])}",
        ]
    return lines


def verdict_lines(
    rows: Sequence[dict[str, Any]], width: int = 100, heads: Mapping[str, Sequence[dict[str, Any]]] | None = None
) -> list[str]:
    """Per row, a 'model · data' line, then one short line per question the study answers (its status, the number,
    its CI), each at most `width` characters (a longer one wraps at spaces, never inside a name or a number group);
    `heads`: summary.json's per-head cells by 'model · data', for the top heads' r."""
    out: list[str] = []
    for row in rows:
        key = f"{row['model']} · {row['data']}"
        out += wrap(key, width)
        for line in _answers(row, (heads or {}).get(key), width):
            out += wrap(line, width, indent="  ", more="      ")
    return out
