"""vrprobe — VLM Reliability Probe: when should you trust a vision-language model's answer?

Python API (mirrors the CLI): `vrprobe.eval`, `vrprobe.trace`, `vrprobe.corrupt`, `vrprobe.study`, `vrprobe.report`,
returning `EvalResult`, `TraceResult`, `CorruptResult`, `StudyResult` and the report's path.
Building blocks: `load_adapter(spec)` (models), `load_dataset(spec)` (data), `vrprobe.scoring.evaluate.score_batch`.
"""

__version__ = "0.1.0"

from vrprobe.analyses.study import StudyResult  # noqa: E402
from vrprobe.api import CorruptResult, EvalResult, TraceResult, corrupt, eval, report, study, trace  # noqa: E402, A004
from vrprobe.data import Dataset, Sample, load_dataset  # noqa: E402
from vrprobe.errors import UsageError, VrprobeError  # noqa: E402
from vrprobe.models import Adapter  # noqa: E402
from vrprobe.registry import load_adapter  # noqa: E402

__all__ = [
    "Adapter",
    "CorruptResult",
    "Dataset",
    "EvalResult",
    "Sample",
    "StudyResult",
    "TraceResult",
    "UsageError",
    "VrprobeError",
    "__version__",
    "corrupt",
    "eval",
    "load_adapter",
    "load_dataset",
    "report",
    "study",
    "trace",
]
