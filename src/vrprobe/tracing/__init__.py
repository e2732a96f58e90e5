"""Causal Tracing Engine, in one package.

- engine.py: `TraceConfig`, `Tracer` (one sample: clean, corrupted and restored runs → `SampleTrace`),
  `trace_dataset` (many samples, resumable → `DatasetTrace`), `mean_grid` (the circuit), `measure_sigma` / `site_std`
  (ROME's noise unit), `DEFINITIONS`.
- restoration.py: restoration `Job`s (`trace_jobs`), the known runs (`KnownRuns`), which positions a restored run
  must compute (`plan_positions`), batching of jobs (`schedule`), the batched restored runs (`restore`), and the
  least work any exact engine must do (`exact_work`, against ROME's loop: `reference_work`).
- replay.py: running decoder layers directly from the arguments captured in a clean forward (`capture_layer_calls`,
  `run_layers`), attention-mask reachability (`attends`, `reachable`, `closed_subset`), block patching.
- attribution.py: attribution patching, the grid's first-order estimate from one forward and one backward
  (`Attributor` → `SampleAttribution`, `attribute_dataset` → `DatasetAttribution`), and `compare` (an estimate's
  grid against the exact one: Spearman ρ, top-3 recall).
- prefix.py: `KVPrefix`, earlier positions' keys and values shared by blocks of rows, passed to vrprobe's attention
  function as an argument.
Band corruption, which uses `site_std`, sits beside this package in `vrprobe.analyses.band`.
"""

from vrprobe.tracing.attribution import (
    Attributor,
    DatasetAttribution,
    SampleAttribution,
    attribute_dataset,
    compare,
)
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
from vrprobe.tracing.restoration import exact_work, reference_work, trace_jobs, window_layers

__all__ = [
    "Attributor",
    "DatasetAttribution",
    "SampleAttribution",
    "attribute_dataset",
    "compare",
    "DEFINITIONS",
    "KINDS",
    "TRACE_GROUPS",
    "DatasetTrace",
    "exact_work",
    "reference_work",
    "trace_jobs",
    "SampleTrace",
    "TraceConfig",
    "Tracer",
    "mean_grid",
    "measure_sigma",
    "site_std",
    "trace_dataset",
    "window_layers",
]
