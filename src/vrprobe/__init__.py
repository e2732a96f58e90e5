"""vrprobe — VLM Reliability Probe: when should you trust a vision-language model's answer?

Public API: `load_adapter(spec)` (models), `load_dataset(spec)` (data), `evaluate(adapter, dataset)`.
"""

__version__ = "0.1.0"

from vrprobe.data import Dataset, Sample, load_dataset  # noqa: E402
from vrprobe.errors import UsageError, VrprobeError  # noqa: E402
from vrprobe.evaluate import EvalResult, evaluate  # noqa: E402
from vrprobe.models import Adapter, load_adapter  # noqa: E402

__all__ = [
    "Adapter",
    "Dataset",
    "EvalResult",
    "Sample",
    "UsageError",
    "VrprobeError",
    "__version__",
    "evaluate",
    "load_adapter",
    "load_dataset",
]
