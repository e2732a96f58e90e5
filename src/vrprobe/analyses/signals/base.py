"""What every reliability signal declares, so that `vrprobe compare` is a loop over signals and one table.

A **signal** is one number per sample; `higher_is_reliable` says which way it points (the table ranks answers by the
signal oriented so that higher = trust more). A signal module (`vrprobe.analyses.signals.*`) exposes `SIGNALS`, a
tuple of `Signal`, and a `compute(adapter, samples, records, options, train)` function that returns, for every sample,
a dict from each of its signals' `column` to a float (NaN where the sample lacks what the signal needs, e.g. a box).
`records` are the clean records of `vrprobe.scoring.evaluate.score_batch(..., hidden=True)` for the same samples, in
the same order: a signal reuses what the clean forward already recorded instead of running it again.

A signal fitted on data (a probe, a calibrated score) receives `train`: the TRAIN samples and their clean records;
it never sees the eval samples' labels. Signals that fit nothing ignore it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vrprobe.data import Sample
from vrprobe.errors import UsageError


@dataclass(frozen=True)
class Signal:
    """One per-sample reliability signal: its name in the table, its record column and what it costs."""

    name: str
    column: str
    definition: str
    #: True when a larger value means "trust the answer more" (confidence); False for entropies and the like
    higher_is_reliable: bool
    #: model passes per sample beyond the clean scoring forward (which every signal shares)
    forwards: float = 0.0
    backwards: float = 0.0
    #: trained on correctness labels (a probe) rather than read off the model
    needs_labels: bool = False
    #: intervenes on the model (corrupts, restores, ablates) rather than only reading it
    causal: bool = False
    #: "answer" (one number read off the output), "token" (per image token), "pixel", "layer", "sample set"
    granularity: str = "answer"
    #: what a sample must have for the signal to exist: "boxes" (a target region)
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainSet:
    """The TRAIN split a fitted signal learns from: samples and their clean `score_batch(..., hidden=True)` records."""

    samples: Sequence[Sample]
    records: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class SignalOptions:
    """Options every signal module receives (defaults = the constants the issue and the VRP paper name)."""

    seed: int = 0
    samples: int = 10  # N sampled answers for the sampling signals
    temperature: float = 1.0
    percentile: float = 90.0  # map cells at or above this percentile enter DBSCAN
    eps: float = 1.5  # DBSCAN neighbourhood, in grid cells
    min_samples: int = 3  # DBSCAN core-point size


def check_paired(samples: Sequence[Sample], records: Sequence[dict[str, Any]]) -> None:
    """One clean record per sample, in the same order, or one `UsageError` naming both counts."""
    if len(samples) != len(records):
        raise UsageError(f"{len(samples)} samples but {len(records)} records: one clean record per sample")
