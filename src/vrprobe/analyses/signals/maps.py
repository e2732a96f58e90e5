"""Map-shape signals (the VRP paper's structural attention): how spread out (H_s) and how fragmented (C_k) the answer
position's attention over the image grid is, and how its spread evolves over the layers (early locking).

All four read the clean record's `attention_image` (head- and layer-averaged map), `attention_image_by_layer`
(head-averaged map per layer) and `image_grid` (see `vrprobe.scoring.grounding.DEFINITIONS`); they cost no pass
beyond the clean forward. The metrics and their edge cases: `vrprobe.metrics.maps`. A sample whose record has no map
(a model type without image geometry, or no recorded attention) gets NaN in every column; one with the mean map but
no per-layer maps (a record written before `attention_image_by_layer` existed) gets NaN in the two layer columns.

Orientation: a diffuse or fragmented map is taken as the less reliable one (the paper's "Attention-Confidence
Assumption", which the paper itself finds near-zero predictive: these signals are there to be compared). Early
locking follows the paper's "Symbolic Detachment" reading: a map that sharpens early and diffuses again before the
answer is taken as detached from it, so a later lock trusts more and a larger rebound trusts less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet, check_paired
from vrprobe.data import Sample
from vrprobe.errors import VrprobeError
from vrprobe.metrics.maps import cluster_count, entropy_by_layer, entropy_rebound, lock_layer, spatial_entropy
from vrprobe.models import Adapter

_MAP = "answer position's attention over the image tokens, renormalised per layer and head"

SIGNALS = (
    Signal(
        name="spatial entropy",
        column="spatial_entropy",
        definition=f"H_s = −Σ_i q_i log q_i (nats) of the {_MAP}, averaged over heads and layers, on the image grid",
        higher_is_reliable=False,
        granularity="token",
    ),
    Signal(
        name="cluster count",
        column="cluster_count",
        definition=f"C_k: DBSCAN clusters (Euclidean on (row, col), eps and min_samples from the options) of the grid "
        f"cells at or above the map's percentile (options.percentile) of the {_MAP}, averaged over heads and layers",
        higher_is_reliable=False,
        granularity="token",
    ),
    Signal(
        name="H_s lock depth",
        column="hs_lock_depth",
        definition="early locking: argmin_l H_s[l] / (L − 1) ∈ [0, 1], where H_s[l] is the spatial entropy of layer "
        f"l's head-averaged {_MAP}; the relative depth of the sharpest layer (first on ties; NaN for one layer)",
        higher_is_reliable=True,
        granularity="token",
    ),
    Signal(
        name="H_s rebound",
        column="hs_rebound",
        definition="H_s[L − 1] − min_l H_s[l] ≥ 0 (nats): how much the per-layer map diffuses again between its "
        "sharpest layer and the last layer (0 when the last layer is the sharpest)",
        higher_is_reliable=False,
        granularity="token",
    ),
)

COLUMNS = tuple(s.column for s in SIGNALS)


def sample_signals(record: dict[str, Any], options: SignalOptions) -> dict[str, float]:
    """The four columns of one clean record (see `SIGNALS`): NaN where the record lacks the map they need."""
    out = dict.fromkeys(COLUMNS, math.nan)
    grid, mean = record.get("image_grid"), record.get("attention_image")
    if grid is None or mean is None:
        return out
    out["spatial_entropy"] = spatial_entropy(mean, grid)
    out["cluster_count"] = float(
        cluster_count(mean, grid, percentile=options.percentile, eps=options.eps, min_samples=options.min_samples)
    )
    by_layer = record.get("attention_image_by_layer")
    if by_layer is not None and len(by_layer) > 0:
        h = entropy_by_layer(by_layer, grid)
        out["hs_lock_depth"] = lock_layer(h) / (len(h) - 1) if len(h) > 1 else math.nan
        out["hs_rebound"] = entropy_rebound(h)
    return out


def compute(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions,
    train: TrainSet | None = None,
) -> list[dict[str, float]]:
    """Each sample's {column: value} for `SIGNALS`, read off its clean record (`records[i]` belongs to
    `samples[i]`); fits nothing, so `train` is ignored, and runs no forward, so `adapter` is unused. Raises
    `VrprobeError` when samples and records differ in number, or a record's map does not fit its grid."""
    check_paired(samples, records)
    out = []
    for s, r in zip(samples, records, strict=True):
        try:
            out.append(sample_signals(r, options))
        except VrprobeError as exc:
            raise VrprobeError(f"{adapter.name}: sample {s.id}: {exc}") from None
    return out
