"""vrprobe — VLM Reliability Probe: when should you trust a vision-language model's answer?

Python API (mirrors the CLI): `vrprobe.load` (a model loaded once, for several analyses), `vrprobe.eval`,
`vrprobe.trace`, `vrprobe.corrupt`, `vrprobe.knockout`, `vrprobe.attribute`, `vrprobe.probe`, `vrprobe.study`,
`vrprobe.report`, `vrprobe.score` (a saved probe's reliability on new data; `vrprobe.Scorer` for in-memory images),
returning `EvalResult`, `TraceResult`, `CorruptResult`, `KnockoutResult`, `AttributeResult`,
`ProbeResult`, `StudyResult` and the report's path. Each takes a spec or a loaded model, and the loading options as one
`options=LoadOptions(...)`.
Building blocks: `load_adapter(spec)` (models), `load_dataset(spec)` (data), `vrprobe.scoring.evaluate.score_batch`.
"""

__version__ = "0.1.0"

from vrprobe.analyses.scorer import Scorer  # noqa: E402
from vrprobe.analyses.study import StudyResult  # noqa: E402
from vrprobe.api import (  # noqa: E402
    AttributeResult,
    CompareResult,
    CorruptResult,
    EvalResult,
    KnockoutResult,
    ProbeResult,
    TraceResult,
    attribute,
    compare,
    corrupt,
    eval,  # noqa: A004
    knockout,
    load,
    probe,
    report,
    score,
    study,
    trace,
)
from vrprobe.data import Dataset, Sample, load_dataset  # noqa: E402
from vrprobe.errors import UsageError, VrprobeError  # noqa: E402
from vrprobe.models import Adapter  # noqa: E402
from vrprobe.registry import load_adapter  # noqa: E402
from vrprobe.runtime.devices import LoadOptions  # noqa: E402

__all__ = [
    "Adapter",
    "AttributeResult",
    "CompareResult",
    "CorruptResult",
    "Dataset",
    "EvalResult",
    "KnockoutResult",
    "LoadOptions",
    "ProbeResult",
    "Sample",
    "Scorer",
    "StudyResult",
    "TraceResult",
    "UsageError",
    "VrprobeError",
    "__version__",
    "attribute",
    "compare",
    "corrupt",
    "eval",
    "knockout",
    "load",
    "load_adapter",
    "load_dataset",
    "probe",
    "report",
    "score",
    "study",
    "trace",
]
