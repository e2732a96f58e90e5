"""The study's controls for its third finding (where image and text meet) and for the causal band, per model on the
traced subset of the reference dataset (the same samples causal tracing used):
- **knockout**: every edge of `vrprobe.analyses.knockout.EDGES` over windows of max(1, round(L / 4)) layers; its
  effects and `integration_layers` (`vrprobe.analyses.knockout`);
- **band_sweep**: hidden corruption of every band of the causal band's width across depth
  (`vrprobe.analyses.band.band_sweep`):
  is the causal band's accuracy drop special? `band_rank` = 1 + the number of bands with a larger drop;
- **band_non_image**: hidden corruption of the causal band at the non-image positions only, so the keys attention
  reads over the image stay clean (the seed's "even when attention maps remained focused"): accuracy and sharpness
  clean vs corrupted.
"""

from __future__ import annotations

import json
import math
from typing import Any

from vrprobe.analyses.band import band_sweep, corrupt_band
from vrprobe.analyses.knockout import EDGES, knockout_summary, run_knockout
from vrprobe.data import Dataset, stratified_subset
from vrprobe.models import Adapter
from vrprobe.runtime.progress import Progress

#: normalised-entropy change below which attention "stays focused" (the study's FOCUS_TOLERANCE)
FOCUS_TOLERANCE = 0.05

DEFINITIONS = {
    "integration_layers": "per image edge (image->question, image->last): the knockout window that lowers p(answer) "
    "most (peak) and the deepest window whose 95% interval excludes 0 (to), on the traced subset",
    "band_sweep": "accuracy and drop_abs when each band of the causal band's width is corrupted (hidden, same noise), "
    "on the traced subset; band_rank = 1 + number of bands with a larger drop",
    "band_non_image": "the causal band corrupted at non-image positions only (image keys stay clean): accuracy and "
    "sharpness clean vs corrupted, on the traced subset",
}


def run_controls(
    adapter: Adapter,
    spec: str,
    dataset: Dataset,
    band: tuple[int, int],
    *,
    trace_limit: int,
    positions: str,
    noise: float,
    seed: int,
    batch_size: int,
    n_boot: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One stored row (JSON strings, like the study's band row) of the three controls for one model."""
    subset = stratified_subset(dataset.samples, trace_limit, seed)
    records, rows = run_knockout(
        adapter, subset, EDGES, None, batch_size=batch_size, progress=progress, stage=f"knockout {spec}"
    )
    ko = knockout_summary(records, rows, n_boot, seed)
    width = band[1] - band[0] + 1
    sweep = band_sweep(
        adapter,
        subset,
        width,
        positions=positions,
        noise=noise,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        stage=f"band sweep {spec}",
    )
    drops = {tuple(b["band"]): b["drop_abs"] for b in sweep["bands"]}
    sweep["band"] = list(band)
    sweep["band_rank"] = 1 + sum(d > drops[tuple(band)] for d in drops.values())
    non_image = corrupt_band(
        adapter, subset, band, target="hidden", positions="non_image", noise=noise, seed=seed, batch_size=batch_size
    ).summary()
    return {
        "model": spec,
        "knockout": json.dumps(ko),
        "band_sweep": json.dumps(sweep),
        "band_non_image": json.dumps(non_image),
    }


def controls_verdict(controls: dict[str, Any], n_image_tokens: int) -> dict[str, Any]:
    """What the controls show, from their numbers: whether the causal band has the largest drop of its sweep, and
    whether attention stays focused while accuracy drops under non-image corruption."""
    sweep, non_image = controls["band_sweep"], controls["band_non_image"]
    shift = (non_image["sharpness_corrupted"] - non_image["sharpness_clean"]) / math.log(max(n_image_tokens, 2))
    return {
        "causal_band_rank": sweep["band_rank"],
        "causal_band_special": sweep["band_rank"] == 1,
        "non_image_drop_abs": non_image["drop_abs"],
        "non_image_entropy_change": shift,
        "focused_while_accuracy_drops_non_image": bool(abs(shift) < FOCUS_TOLERANCE and non_image["drop_abs"] > 0),
    }
