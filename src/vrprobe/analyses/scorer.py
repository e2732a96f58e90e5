"""Score new samples with a saved, calibrated reliability probe: `Scorer` (what `vrprobe score` and `api.score` run).

`Scorer.load(probe_dir, model=...)` loads the model and the probe (`vrprobe.analyses.saved_probe.load_probe`, which
refuses a model whose fingerprint differs from the one the probe was trained on). `score_samples(samples)` answers
them in ONE forward per batch (`score_batch(..., hidden=True)`) and reads the probe's features, the answer position's
hidden state `hidden_last` [L, D], from that same forward: each record gets the model's `predicted` answer and its
`confidence`, the probe's calibrated `reliability` and its uncalibrated `reliability_raw`, and `correct` where the
sample has reference answers (else None). The hidden arrays are not returned.

`scorer(images, questions, choices=None)` does the same for PIL images and question strings: without choices the
question is open-ended (greedy generation), with choices closed-set (candidate scoring).

With `attention=True` (either call) each record also gets `attention`: the answer position's attention over the
image, from the same forward (`attention_image` of `score_batch`: averaged over layers and heads, renormalised over
the image tokens, so it sums to 1), as a list of `rows` lists of `cols` floats in the image token grid's row-major
order (`image_grid`); None for a model whose image tokens form no single grid (tiled processors).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vrprobe.analyses.saved_probe import DEFINITIONS as PROBE_DEFINITIONS
from vrprobe.analyses.saved_probe import SavedProbe, load_probe
from vrprobe.data import Sample
from vrprobe.errors import UsageError
from vrprobe.metrics.selective import auroc
from vrprobe.models import Adapter
from vrprobe.registry import as_adapter
from vrprobe.runtime.devices import LoadOptions
from vrprobe.scoring.evaluate import score_batch

#: the keys of a scored record
KEYS = ("sample_id", "question", "predicted", "confidence", "reliability", "reliability_raw", "correct")

DEFINITIONS = {
    "reliability": PROBE_DEFINITIONS["reliability"] + "; the probe reads the answer position's hidden state at its "
    "layer, from the same forward that gives the answer",
    "reliability_raw": PROBE_DEFINITIONS["raw"],
    "confidence": "the model's own confidence in its answer: the softmax probability of the predicted candidate "
    "(closed set) or the greedy answer's sequence probability (open-ended)",
    "correct": "1 if the predicted answer matches a reference answer (VQA: VQA accuracy ≥ 0.5), else 0; None for a "
    "sample without reference answers",
    "accuracy": "mean of correct over the samples that have reference answers",
    "auroc_reliability / auroc_confidence": "AUROC of reliability / confidence for telling correct from wrong answers "
    "(samples with reference answers; null unless both classes occur)",
}


class Scorer:
    """A model and the saved probe trained on it: score samples, or images with questions, in one forward each."""

    def __init__(self, adapter: Adapter, probe: SavedProbe, *, batch_size: int = 32, max_new_tokens: int = 10) -> None:
        probe.check_model(adapter)
        if probe.feature != "last":
            raise UsageError(f"probe {probe.path} reads '{probe.feature}' features; vrprobe score reads 'last' only")
        self.adapter, self.probe = adapter, probe
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    @classmethod
    def load(
        cls,
        probe_dir: Path | str,
        model: str | os.PathLike[str] | Adapter,
        options: LoadOptions | None = None,
        *,
        batch_size: int = 32,
        max_new_tokens: int = 10,
    ) -> Scorer:
        """The model (a spec, loaded with `options`, or a loaded adapter) and the probe in `probe_dir`; one
        `UsageError` line when the probe was trained on another model. The probe is read before the model loads."""
        probe = load_probe(probe_dir)
        return cls(as_adapter(model, options), probe, batch_size=batch_size, max_new_tokens=max_new_tokens)

    def _score(self, samples: Sequence[Sample], attention: bool = False) -> list[dict[str, Any]]:
        scored = score_batch(self.adapter, samples, hidden=True, max_new_tokens=self.max_new_tokens)
        X = np.stack([r["hidden_last"] for r in scored])  # [n, L, D]
        raw = self.probe.predict_raw(X)
        calibrated = self.probe.calibrator.predict(raw)
        records = [
            {
                "sample_id": s.id,
                "question": s.question,
                "predicted": r["predicted"],
                "confidence": float(r["confidence"]),
                "reliability": float(c),
                "reliability_raw": float(p),
                "correct": float(r["correct"]) if s.answers else None,
            }
            for s, r, c, p in zip(samples, scored, calibrated, raw, strict=True)
        ]
        if attention:
            for record, r in zip(records, scored, strict=True):
                record["attention"] = _attention_map(r)
        return records

    def score_samples(self, samples: Sequence[Sample], *, attention: bool = False) -> list[dict[str, Any]]:
        """One record per sample, in order (module docstring): batches of `batch_size` samples of one kind (closed
        set or open-ended); `attention=True` adds each answer's attention map."""
        out: list[dict[str, Any]] = []
        pos = 0
        while pos < len(samples):
            closed = bool(samples[pos].choices)
            end = pos
            while end < len(samples) and end - pos < self.batch_size and bool(samples[end].choices) == closed:
                end += 1
            out += self._score(samples[pos:end], attention)
            pos = end
        return out

    def __call__(
        self,
        images: Sequence[Image.Image] | Image.Image,
        questions: Sequence[str] | str,
        choices: Sequence[Sequence[str] | None] | Sequence[str] | None = None,
        *,
        attention: bool = False,
    ) -> list[dict[str, Any]]:
        """Score questions about in-memory images: `choices` None (open-ended), one candidate list for every
        question, or one list per question (None for an open-ended one); `attention=True` adds each answer's
        attention map."""
        images = [images] if isinstance(images, Image.Image) else list(images)
        questions = [questions] if isinstance(questions, str) else list(questions)
        if len(images) != len(questions):
            raise UsageError(f"{len(images)} images but {len(questions)} questions: give one question per image")
        per: list[Sequence[str] | None]
        if choices is None:
            per = [None] * len(images)
        elif all(isinstance(c, str) for c in choices):
            per = [choices] * len(images)  # type: ignore[list-item]
        else:
            per = list(choices)
            if len(per) != len(images):
                raise UsageError(f"{len(images)} images but {len(per)} choice lists: give one list per image")
        samples = [
            Sample(
                id=f"input-{i}",
                question=q,
                answers=(),
                choices=tuple(c) if c else None,
                image_fn=_rgb(im),
            )
            for i, (im, q, c) in enumerate(zip(images, questions, per, strict=True))
        ]
        return self.score_samples(samples, attention=attention)


def _attention_map(record: dict[str, Any]) -> list[list[float]] | None:
    """`attention_image` (row-major, rows · cols values) of a `score_batch` record as `rows` lists of `cols`."""
    grid, flat = record.get("image_grid"), record.get("attention_image")
    if grid is None or flat is None:
        return None
    rows, cols = grid
    return [[float(v) for v in flat[r * cols : (r + 1) * cols]] for r in range(rows)]


def _rgb(image: Image.Image) -> Any:
    if not isinstance(image, Image.Image):
        raise UsageError(f"images must be PIL images, got {type(image).__name__}")
    rgb = image.convert("RGB")
    return lambda: rgb


def score_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`n`, and over the records with a `correct`: `n_labelled`, `accuracy` and the AUROCs of reliability and of
    confidence (None unless both classes occur; see `DEFINITIONS`)."""
    labelled = [r for r in records if r.get("correct") is not None]
    y = np.array([r["correct"] for r in labelled], dtype=float)

    def area(key: str) -> float | None:
        if not labelled or y.min() == y.max():
            return None
        value = auroc(np.array([r[key] for r in labelled], dtype=float), y)
        return None if math.isnan(value) else value

    return {
        "n": len(records),
        "n_labelled": len(labelled),
        "accuracy": float(y.mean()) if labelled else None,
        "auroc_reliability": area("reliability"),
        "auroc_confidence": area("confidence"),
        "mean_reliability": float(np.mean([r["reliability"] for r in records])) if records else None,
    }
