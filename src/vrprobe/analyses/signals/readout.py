"""The signals vrprobe already had before `vrprobe compare`, as `Signal`s read off the clean records: no extra pass.

- `confidence`, `margin` (answer), `sharpness` (token; an entropy: lower = trusted more), `attention_on_target`
  (token; needs target boxes): each the record's value of the same name (`vrprobe.scoring.evaluate.score_batch`),
  NaN where the record has none (no boxes, an open-ended answer's margin, a model without recorded attention).
- `probe` (layer; needs labels): the hidden-state reliability probe of `vrprobe.analyses.probe` on the answer
  position's hidden state, fitted on TRAIN's clean records only (every decoder layer, the layer and regularisation
  chosen by cross-validation on TRAIN), then applied to the eval records; column `reliability`.

The compare loop times each group of signals computed together, so the free reads and the fitted probe are two
groups (`READS`, `PROBE`), each an object with the signal-module contract (`SIGNALS`, `compute`); the module-level
`SIGNALS` and `compute` hold both, for a caller that wants the module as one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrprobe.analyses.probe import ReliabilityProbe, features
from vrprobe.analyses.proxies import DEFINITIONS as PROBE_DEFINITIONS
from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet
from vrprobe.data import Sample
from vrprobe.errors import UsageError
from vrprobe.models import Adapter
from vrprobe.scoring.evaluate import DEFINITIONS as EVAL_DEFINITIONS

#: what `compute` returns: per sample, each signal's column -> its value (NaN where it has none)
Values = list[dict[str, float]]
Compute = Callable[[Adapter, Sequence[Sample], Sequence[dict[str, Any]], SignalOptions, TrainSet], Values]

CONFIDENCE = Signal(
    "confidence", "confidence", EVAL_DEFINITIONS["confidence"], higher_is_reliable=True, granularity="answer"
)
MARGIN = Signal("margin", "margin", EVAL_DEFINITIONS["margin"], higher_is_reliable=True, granularity="answer")
SHARPNESS = Signal(
    "sharpness",
    "sharpness",
    EVAL_DEFINITIONS["sharpness"] + " (an entropy: the table ranks by its negative)",
    higher_is_reliable=False,
    granularity="token",
)
ATTENTION_ON_TARGET = Signal(
    "attention on target",
    "attention_on_target",
    EVAL_DEFINITIONS["attention_on_target"],
    higher_is_reliable=True,
    granularity="token",
    requires=("boxes",),
)
PROBE_SIGNAL = Signal(
    "probe",
    "reliability",
    f"{PROBE_DEFINITIONS['reliability']}; best_layer = {PROBE_DEFINITIONS['best_layer']}",
    higher_is_reliable=True,
    needs_labels=True,
    granularity="layer",
)


@dataclass(frozen=True)
class SignalGroup:
    """Signals computed together, timed as one: the signal-module contract (`SIGNALS`, `compute`) as an object."""

    SIGNALS: tuple[Signal, ...]
    function: Compute

    def compute(
        self,
        adapter: Adapter,
        samples: Sequence[Sample],
        records: Sequence[dict[str, Any]],
        options: SignalOptions,
        train: TrainSet,
    ) -> Values:
        return self.function(adapter, samples, records, options, train)


def _value(record: dict[str, Any], key: str) -> float:
    v = record.get(key)
    return math.nan if v is None else float(v)


def read(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions,
    train: TrainSet,
) -> Values:
    """confidence, margin, sharpness and attention on target as the clean records hold them (NaN where absent)."""
    return [{s.column: _value(r, s.column) for s in READS.SIGNALS} for r in records]


def fit_probe(train: TrainSet, seed: int) -> ReliabilityProbe:
    """The reliability probe fitted on TRAIN's clean records (features `last`, target `correct`), every layer."""
    if not train.records:
        raise UsageError("the probe signal needs training samples (--data)")
    y = np.array([r["correct"] for r in train.records], dtype=float)
    return ReliabilityProbe(seed=seed).fit(features(train.records, "last"), y)


def probe(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions,
    train: TrainSet,
) -> Values:
    """The probe's probability that each eval answer is correct, at the layer cross-validation chose on TRAIN."""
    if records and "hidden_last" not in records[0]:
        raise UsageError("the probe signal needs the clean records' hidden states (score_batch(..., hidden=True))")
    fitted = fit_probe(train, options.seed)
    scores = fitted.predict_proba(features(records, "last")) if records else np.zeros(0)
    return [{PROBE_SIGNAL.column: float(v)} for v in scores]


READS = SignalGroup((CONFIDENCE, MARGIN, SHARPNESS, ATTENTION_ON_TARGET), read)
PROBE = SignalGroup((PROBE_SIGNAL,), probe)
SIGNALS = READS.SIGNALS + PROBE.SIGNALS


def compute(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions,
    train: TrainSet,
) -> Values:
    """Every signal of this module: the reads and the probe, per sample."""
    reads = READS.compute(adapter, samples, records, options, train)
    fitted = PROBE.compute(adapter, samples, records, options, train)
    return [{**a, **b} for a, b in zip(reads, fitted, strict=True)]
