"""`vrprobe probe` for people: its "Does it transfer?" table in the HTML report, from summary.json only.

`is_probe(summary)` whether `summary` is a probe run's; `TRANSFER_COLUMNS` the table's columns; `transfer_rows
(summary)` one row per eval set, the held-out test set first, then the transfer sets: n, accuracy, the AUROC (correct
vs wrong) of the calibrated reliability and of confidence, and the ECE of each, every one with its 95% bootstrap
interval; `transfer_section(summary)` what the report draws (None unless the run is a probe run). Layout only: every
number comes from `vrprobe.analyses.proxies`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vrprobe.reporting.tables import Column, sig3, value_interval


def is_probe(summary: dict[str, Any]) -> bool:
    """Whether `summary` is a `vrprobe probe` run's: per eval set results (`evaluations`) and the probe's layer."""
    return isinstance(summary.get("evaluations"), dict) and "best_layer" in summary


def _interval(value: Any, ci: Any) -> str:
    """'0.912 [0.884, 0.937]'; 'n/a' when the run has no such number (an older run, or constant confidence)."""
    return value_interval({"value": value, "ci": ci}, digits=3)


def _confidence_auroc(ev: dict[str, Any]) -> str:
    cell = ev.get("selective", {}).get("confidence") or {}
    return _interval(cell.get("auroc"), cell.get("ci"))


#: the table's columns after the eval set: key-less cells read from one `evaluations` entry
TRANSFER_COLUMNS = (
    Column("n", lambda ev: sig3(ev.get("n"))),
    Column("accuracy", lambda ev: sig3(ev.get("accuracy"))),
    Column(
        "AUROC reliability [95% CI]", lambda ev: _interval(ev.get("auroc_reliability"), ev.get("auroc_reliability_ci"))
    ),
    Column("AUROC confidence [95% CI]", _confidence_auroc),
    Column("ECE reliability [95% CI]", lambda ev: _interval(ev.get("ece_reliability"), ev.get("ece_reliability_ci"))),
    Column("ECE confidence [95% CI]", lambda ev: _interval(ev.get("ece_confidence"), ev.get("ece_confidence_ci"))),
)


def transfer_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row of cell text per eval set, in the run's order: the set ('… (test)' for the first, '… (transfer)' for
    the others), then `TRANSFER_COLUMNS`."""
    evaluations = summary["evaluations"]
    specs = [s for s in summary.get("eval_data", evaluations) if s in evaluations]
    return [
        [f"{spec} ({'test' if i == 0 else 'transfer'})", *(c.cell(evaluations[spec]) for c in TRANSFER_COLUMNS)]
        for i, spec in enumerate(specs)
    ]


@dataclass
class TransferSection:
    """The report's "Does it transfer?" table: header, rows of cell text, and the sentence above it."""

    header: list[str]
    rows: list[list[str]]
    headline: str


def transfer_section(summary: dict[str, Any]) -> TransferSection | None:
    """The report's table of a probe run; None for any other run."""
    if not is_probe(summary):
        return None
    kind = (summary.get("calibrator") or {}).get("kind", "n/a")
    headline = (
        f"The probe (layer {summary.get('best_layer')}) and its calibrator ({kind}) learn from "
        f"{sig3(summary.get('n_train'))} samples of {summary.get('data')} only; reliability = the calibrated score."
    )
    return TransferSection(
        header=["eval set", *(c.header for c in TRANSFER_COLUMNS)], rows=transfer_rows(summary), headline=headline
    )
