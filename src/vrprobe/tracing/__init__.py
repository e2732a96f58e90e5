"""Causal Tracing Engine, in one package.

- engine.py: `TraceConfig`, `Tracer` (one sample: clean, corrupted and restored runs → `SampleTrace`),
  `trace_dataset` (many samples, resumable → `DatasetTrace`), `mean_grid` (the circuit), `measure_sigma` / `site_std`
  (ROME's noise unit), `DEFINITIONS`.
- restoration.py: restoration `Job`s, the known runs (`KnownRuns`), which positions a restored run must compute
  (`plan_positions`), batching of jobs (`schedule`), and the batched restored runs (`restore`).
- replay.py: running decoder layers directly from the arguments captured in a clean forward (`capture_layer_calls`,
  `run_layers`), attention-mask reachability (`attends`, `reachable`, `closed_subset`), block patching.
- prefix.py: `KVPrefix`, earlier positions' keys and values shared by blocks of rows, passed to vrprobe's attention
  function as an argument.
Band corruption, which uses `site_std`, sits beside this package in `vrprobe.band`.
"""

from vrprobe.tracing.engine import (
    DEFINITIONS,
    KINDS,
    TRACE_GROUPS,
    DatasetTrace,
    SampleTrace,
    TraceConfig,
    Tracer,
    mean_grid,
    measure_sigma,
    site_std,
    trace_dataset,
)
from vrprobe.tracing.restoration import window_layers

__all__ = [
    "DEFINITIONS",
    "KINDS",
    "TRACE_GROUPS",
    "DatasetTrace",
    "SampleTrace",
    "TraceConfig",
    "Tracer",
    "mean_grid",
    "measure_sigma",
    "site_std",
    "trace_dataset",
    "window_layers",
]
