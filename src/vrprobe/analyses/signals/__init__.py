"""Reliability signals, one module each, all declaring `Signal`s (see `base`); `vrprobe compare` runs them.

`MODULES` is the list `vrprobe compare` runs, in the order its table lists their signals. An entry is anything with
the signal-module contract (`SignalModule`: a `SIGNALS` tuple and `compute(adapter, samples, records, options,
train)`): a module, or an object such as `readout.READS`, one group of signals the loop times as one. Adding a signal
module is one import and one entry below; nothing is found by a module path written as a string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vrprobe.analyses.signals import baselines, causal, lens, maps, readout, saliency, sampling
from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet
from vrprobe.data import Sample
from vrprobe.models import Adapter


class SignalModule(Protocol):
    """What the compare loop needs of a signal module (or group object): its signals and one `compute` call."""

    @property
    def SIGNALS(self) -> Sequence[Signal]: ...

    def compute(
        self,
        adapter: Adapter,
        samples: Sequence[Sample],
        records: Sequence[dict[str, Any]],
        options: SignalOptions,
        train: TrainSet,
    ) -> Sequence[Mapping[str, float]]: ...


#: the signal modules `vrprobe compare` runs: the readouts first (free reads, then the fitted probe), then the
#: others roughly from the cheapest to the dearest; a new module is one import above and one line here
MODULES: tuple[SignalModule, ...] = (
    readout.READS,
    readout.PROBE,
    baselines,
    maps,
    lens,
    saliency,
    sampling,
    causal,
)

__all__ = ["MODULES", "SignalModule"]
