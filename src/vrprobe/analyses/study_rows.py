"""The per-sample work of a study: `study_batch` (one batch's records) and `StudyJob` (it, shipped by an executor)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vrprobe.analyses import grounding
from vrprobe.analyses.band import corrupt_batch
from vrprobe.analyses.jobs import Opened, Source
from vrprobe.analyses.probe import ReliabilityProbe, features
from vrprobe.interventions import Edit
from vrprobe.models import Adapter
from vrprobe.runtime.executors import Rows
from vrprobe.scoring.evaluate import score_batch


def study_batch(
    adapter: Adapter,
    spec: str,
    data: str,
    indices: Sequence[int],
    chunk: Sequence[Any],
    edits: list,
    seed: int,
    max_new_tokens: int,
    probe: ReliabilityProbe | None,
    probe_ids: set[str],
) -> list[dict[str, Any]]:
    """The study's records of one batch (`indices`: the samples' positions in the dataset): the clean answer with
    sharpness, the margin and the probe's reliability (same forward), and the answer under band corruption."""
    batch = adapter.encode_samples(chunk)
    clean = score_batch(adapter, chunk, batch, max_new_tokens=max_new_tokens, hidden=True)
    reliability = probe.predict_proba(features(clean, "last")) if probe else [float("nan")] * len(clean)
    banded = corrupt_batch(adapter, chunk, edits, seed, indices[0], batch, max_new_tokens=max_new_tokens)
    return [
        {
            "model": spec,
            "data": data,
            "index": index,
            "sample_id": r["sample_id"],
            "question_type": r["question_type"],
            "predicted": r["predicted"],
            "confidence": r["confidence"],
            "correct": r["correct"],
            "accuracy": r["accuracy"],
            "overconfidence": max(r["confidence"] - r["correct"], 0.0),
            "sharpness": r["sharpness"],
            "sharpness_norm": r["sharpness_norm"],
            "entropy_by_head": r["entropy_by_head"],
            "margin": r.get("margin", float("nan")),
            "reliability": float(rel),
            "probe_train": r["sample_id"] in probe_ids,
            "band_correct": b["correct"],
            "band_accuracy": b["accuracy"],
            "band_sharpness": b["sharpness"],
            "n_image_tokens": int(batch.groups.image[j].sum()),
            **{k: r[k] for k in grounding.GROUNDED_KEYS if r.get(k) is not None},
        }
        for j, (index, r, b, rel) in enumerate(zip(indices, clean, banded, reliability, strict=True))
    ]


@dataclass(frozen=True)
class StudyJob:
    """`study_batch` for an executor: model `spec` on the samples of `source`, with the band's `edits` and the
    probe trained on the driver."""

    source: Source
    spec: str
    edits: tuple[Edit, ...]
    seed: int
    max_new_tokens: int
    probe: ReliabilityProbe | None
    probe_ids: frozenset[str]

    def open(self, cache: dict[Any, Any]) -> Opened:
        return self.source.open(cache)

    def rows(self, context: Opened, indices: list[int]) -> Rows:
        chunk = [context.samples[i] for i in indices]
        edits = list(self.edits)
        return {
            "records": study_batch(
                context.adapter,
                self.spec,
                self.source.data,
                indices,
                chunk,
                edits,
                self.seed,
                self.max_new_tokens,
                self.probe,
                set(self.probe_ids),
            )  # fmt: skip
        }
