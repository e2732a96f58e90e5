"""Closed-set evaluation: prediction, confidence and correctness for every sample of a dataset.

Definitions (also written into every `summary.json`):
- **confidence** (probability): softmax, over the sample's candidate answers, of each candidate's full token-sequence
  log-likelihood given the prompt, taken at the predicted (argmax) candidate.
- **correct** (0/1): the predicted candidate equals one of the sample's reference answers (case-insensitive).
- **accuracy**: mean of `correct`; `accuracy_by_type`: the same within each question type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vrprobe.data import Dataset, Sample
from vrprobe.errors import VrprobeError
from vrprobe.models import Adapter, Batch

DEFINITIONS = {
    "confidence": "softmax over the candidate answers of each candidate's summed token log-likelihood given the "
    "prompt, at the predicted (argmax) candidate; a probability in [0, 1]",
    "correct": "1 if the predicted candidate equals a reference answer (case-insensitive), else 0",
    "accuracy": "mean of correct over samples",
    "accuracy_by_type": "mean of correct within each question type",
}

Progress = Callable[[int], None]


@dataclass
class EvalResult:
    """Per-sample records (one dict per sample) and the summary of a closed-set evaluation."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]


def is_correct(predicted: str, answers: Sequence[str]) -> float:
    """1.0 when `predicted` equals one of `answers` ignoring case and surrounding space, else 0.0."""
    p = predicted.strip().lower()
    return float(any(p == a.strip().lower() for a in answers))


def score_batch(adapter: Adapter, samples: Sequence[Sample], batch: Batch | None = None) -> list[dict[str, Any]]:
    """Encode (unless `batch` is given) and score samples; returns their records (definitions: module docstring)."""
    for s in samples:
        if not s.choices:
            raise VrprobeError(f"sample {s.id} has no candidate answers; only closed-set scoring is available")
    if batch is None:
        batch = adapter.encode([s.load_image() for s in samples], [s.question for s in samples])
    loglik = adapter.score_candidates(batch, [s.choices for s in samples])
    records = []
    for s, ll in zip(samples, loglik, strict=True):
        probs = torch.softmax(ll.double(), dim=0)
        k = int(torch.argmax(probs))
        predicted = s.choices[k]
        records.append(
            {
                "sample_id": s.id,
                "question": s.question,
                "question_type": s.question_type,
                "answers": list(s.answers),
                "predicted": predicted,
                "confidence": float(probs[k]),
                "correct": is_correct(predicted, s.answers),
                "choices": list(s.choices),
                "probs": [float(p) for p in probs],
            }
        )
    return records


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`n`, `accuracy` and `accuracy_by_type` of a list of records."""
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_type[r["question_type"]].append(r["correct"])
    n = len(records)
    return {
        "n": n,
        "accuracy": sum(r["correct"] for r in records) / n if n else float("nan"),
        "accuracy_by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
    }


@torch.no_grad()
def evaluate(
    adapter: Adapter, dataset: Dataset, *, batch_size: int = 32, progress: Progress | None = None
) -> EvalResult:
    """Score every sample of `dataset` with `adapter`; `progress(k)` is called after each batch of k samples."""
    if batch_size < 1:
        raise VrprobeError(f"batch size must be at least 1, got {batch_size}")
    records: list[dict[str, Any]] = []
    samples = dataset.samples
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        records.extend(score_batch(adapter, chunk))
        if progress:
            progress(len(chunk))
    summary = summarize(records)
    summary["model"] = {"spec": adapter.name, "family": adapter.family, "params": adapter.num_params}
    summary["data"] = dataset.spec
    summary["definitions"] = DEFINITIONS
    return EvalResult(records=records, summary=summary)
